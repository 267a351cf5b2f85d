"""Edits in place against the data the kernels cache per weight: bit masks derived from the
indices (patterns with m != 2n) or position words (1:2, 2:4), the prepared C++ weight, the rows pack of hinm.prepack and the
CUDA device layout. An edit is either seen by the next product or refused; never a stale result.
Also the structure check the products make once per edit state (positions, distinct kept columns)."""

import numpy as np
import pytest

import hinm
from hinm import _cuda, ops
from hinm._arrays import edit_token, frozen
from conftest import needs_torch
from test_ops import check_close

MASK_PATTERNS = [(1, 4), (2, 8), (3, 8)]  # decoded from bit masks at small batches
WORD_PATTERNS = [(1, 2), (2, 4)]  # read from 2-bit position words at small batches, where cached


def _reference(x, w):
    return x.astype(np.float64) @ np.asarray(w.to_dense(), dtype=np.float64).T


def _valid_positions(shape, n, m, rng):
    """uint8 in-group positions of a random valid n:m pattern (ascending within each group)."""
    r, kc = shape
    groups = np.stack([np.sort(rng.permutation(m)[:n]) for _ in range(r * kc // n)])
    return groups.reshape(r, kc).astype(np.uint8)


def test_edit_token_sees_what_can_change():
    owner = np.zeros((4, 4), np.float32)
    assert edit_token(owner) is None  # writeable: an edit could not be seen
    owner.flags.writeable = False
    assert edit_token(owner) == ("read-only",)
    base = np.zeros((4, 4), np.float32)
    view = base[1:]
    view.flags.writeable = False
    assert edit_token(view) is None  # read-only view, but its base is writeable
    assert edit_token(np.frombuffer(b"abcd", np.uint8)) == ("read-only",)
    copy = frozen(view)
    assert copy is not view and not copy.flags.writeable and np.array_equal(copy, view)
    assert frozen(owner) is owner


@needs_torch
def test_edit_token_follows_the_torch_version_counter():
    import torch

    t = torch.zeros(3)
    before = edit_token(t)
    t.detach()[0] = 1  # an alias shares the counter
    assert edit_token(t) != before


def test_hinm_indices_are_read_only_and_values_stay_writeable(rng):
    w = rng.standard_normal((64, 64)).astype(np.float32)
    nm = hinm.compress_nm(w, 1, 4)
    hi = hinm.compress(w, hinm.HiNMConfig(16, 0.5, 1, 4))
    series = hinm.tasd(w, "1:4+1:8")
    for t in (nm, hi, *series.terms):
        assert not t.indices.flags.writeable and t.values.flags.writeable
        with pytest.raises(ValueError, match="read-only"):
            t.indices[0, 0] = 0
    # a state dict's writeable indices are copied, not frozen in the caller's hands
    sd = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in nm.state_dict().items()}
    loaded = hinm.NMTensor.from_state_dict(sd)
    assert sd["indices"].flags.writeable and not loaded.indices.flags.writeable
    assert loaded.indices is not sd["indices"] and np.array_equal(loaded.indices, nm.indices)
    hsd = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in hi.state_dict().items()}
    assert not hinm.HiNMTensor.from_state_dict(hsd).indices.flags.writeable


@pytest.mark.parametrize("n,m", MASK_PATTERNS + WORD_PATTERNS)
def test_writeable_numpy_indices_are_never_stale(rng, n, m):
    nm = hinm.compress_nm(rng.standard_normal((40, 40 * m)).astype(np.float32), n, m)
    t = hinm.NMTensor(nm.values.copy(), nm.indices.copy(), nm.shape, n, m)  # the user's writeable arrays
    x = rng.standard_normal((1, 40 * m)).astype(np.float32)
    for _ in range(2):
        check_close(hinm.linear(x, t), _reference(x, t), t.to_dense(), x)
    # nothing derived from writeable indices is kept (word patterns need nothing: no fast-path masks)
    assert ops._fast(t) is None if (n, m) in MASK_PATTERNS else ops._MASKS[t][3] is None
    t.indices[...] = _valid_positions(t.indices.shape, n, m, rng)
    check_close(hinm.linear(x, t), _reference(x, t), t.to_dense(), x)
    check_close(hinm.spmm(t, x.T.copy()).T, _reference(x, t), t.to_dense(), x)


@needs_torch
@pytest.mark.parametrize("n,m", MASK_PATTERNS + WORD_PATTERNS)
def test_torch_index_edits_rebuild_the_masks(rng, n, m):
    import torch

    w = torch.from_numpy(rng.standard_normal((48, 40 * m)).astype(np.float32))
    x = torch.from_numpy(rng.standard_normal((2, 40 * m)).astype(np.float32))
    for t in (hinm.compress_nm(w, n, m), hinm.compress(w, hinm.HiNMConfig(16, 0.5, n, m))):
        hinm.linear(x, t)
        assert ops._fast(t) is not None  # masks cached, the fast path armed
        assert ops._MASKS[t][3][1].dtype == (np.uint32 if (n, m) in WORD_PATTERNS else np.uint16)
        t.indices.copy_(torch.from_numpy(_valid_positions(tuple(t.indices.shape), n, m, rng)))
        assert ops._fast(t) is None  # the version moved: the fast path steps aside
        y = hinm.linear(x, t)
        check_close(y.numpy(), _reference(x.numpy(), t), t.to_dense().numpy(), x.numpy())
        assert ops._fast(t) is not None  # rebuilt for the new indices
        check_close(hinm.spmm(t, x.T.contiguous()).T.numpy(), _reference(x.numpy(), t), t.to_dense().numpy(),
                    x.numpy())


def test_non_contiguous_values_are_read_where_they_are(rng):
    nm = hinm.compress_nm(rng.standard_normal((40, 64)).astype(np.float32), 1, 4)
    t = hinm.NMTensor(np.asfortranarray(nm.values), nm.indices, nm.shape, 1, 4)  # kernels take a copy
    x = rng.standard_normal((1, 64)).astype(np.float32)
    hinm.linear(x, t)
    t.values[5] *= -3  # must not be hidden by a cached contiguous copy
    check_close(hinm.linear(x, t), _reference(x, t), t.to_dense(), x)


@needs_torch
def test_prepack_refuses_a_weight_edited_since(rng):
    import torch

    t = hinm.compress_nm(torch.from_numpy(rng.standard_normal((64, 64)).astype(np.float32)), 2, 4)
    x = torch.from_numpy(rng.standard_normal((1, 64)).astype(np.float32))
    packed = hinm.prepack(t)
    assert torch.equal(hinm.linear(x, packed), hinm.linear(x, t))
    t.values.mul_(2)
    for call in (lambda: hinm.linear(x, packed), lambda: hinm.spmm(packed, x.T.contiguous())):
        with pytest.raises(RuntimeError, match="edited in place after hinm.prepack"):
            call()
    assert torch.equal(hinm.linear(x, hinm.prepack(t)), hinm.linear(x, t))


def test_device_layout_cache_key_sees_edits_and_replacements():
    # CPU-side: the state the CUDA cache compares (the cache itself needs a GPU)
    class W:
        pass

    w = W()
    w.values, w.indices = np.zeros((2, 4), np.float16), np.zeros((2, 4), np.uint8)
    assert _cuda._edit_state(w) is None  # writeable numpy: never cached
    w.values.flags.writeable = w.indices.flags.writeable = False
    state = _cuda._edit_state(w)
    assert state is not None and _cuda._unchanged(state, _cuda._edit_state(w))
    w.indices = w.indices.copy()  # replaced (and writeable again)
    assert not _cuda._unchanged(state, _cuda._edit_state(w))
    w.indices.flags.writeable = False
    assert not _cuda._unchanged(state, _cuda._edit_state(w))  # another array, same token


@needs_torch
def test_device_layout_cache_key_follows_torch_versions():
    import torch

    class W:
        pass

    w = W()
    w.values, w.indices = torch.zeros(2, 4, dtype=torch.float16), torch.zeros(2, 4, dtype=torch.uint8)
    state = _cuda._edit_state(w)
    assert _cuda._unchanged(state, _cuda._edit_state(w))
    w.values.add_(1)
    assert not _cuda._unchanged(state, _cuda._edit_state(w))


@pytest.mark.parametrize("n,m", [(2, 4), (1, 4), (4, 8)])
def test_bad_positions_are_refused_at_the_first_product(rng, n, m):
    nm = hinm.compress_nm(rng.standard_normal((24, 8 * m)).astype(np.float32), n, m)
    indices = nm.indices.copy()
    indices[5, -1] = m  # out of its group
    bad = hinm.NMTensor(nm.values, indices, nm.shape, n, m)  # not validated on construction
    x = rng.standard_normal((3, 8 * m)).astype(np.float32)
    for call in (lambda: hinm.linear(x, bad), lambda: hinm.linear(np.repeat(x, 7, 0), bad),
                 lambda: hinm.spmm(bad, x.T.copy()), lambda: hinm.prepack(bad)):
        with pytest.raises(ValueError, match="weight: positions: group .* of row 5"):
            call()


def test_positions_are_checked_once_per_edit_state(rng, monkeypatch):
    t = hinm.compress_nm(rng.standard_normal((24, 32)).astype(np.float32), 2, 4)
    x = rng.standard_normal((1, 32)).astype(np.float32)
    calls = []
    real = ops._C.validate_nm_positions
    monkeypatch.setattr(ops._C, "validate_nm_positions", lambda *a: calls.append(1) or real(*a))
    for batch in (1, 1, 2, 20):
        hinm.linear(np.repeat(x, batch, 0), t)
    assert len(calls) == 1


@needs_torch
def test_torch_index_edits_are_checked_again(rng):
    import torch

    t = hinm.compress_nm(torch.from_numpy(rng.standard_normal((24, 32)).astype(np.float32)), 2, 4)
    x = torch.from_numpy(rng.standard_normal((1, 32)).astype(np.float32))
    hinm.linear(x, t)
    good = t.indices.clone()
    t.indices[3, 0] = 9
    for batch in (1, 20):
        with pytest.raises(ValueError, match="row 3"):
            hinm.linear(x.repeat(batch, 1), t)
    t.indices.copy_(good)
    check_close(hinm.linear(x, t).numpy(), _reference(x.numpy(), t), t.to_dense().numpy(), x.numpy())


def test_a_column_kept_twice_is_refused(rng):
    import dataclasses

    h = hinm.compress(rng.standard_normal((32, 64)).astype(np.float32), hinm.HiNMConfig(16, 0.5, 2, 4))
    col_idx = h.col_idx.copy()
    col_idx[1, 3] = col_idx[1, 0]
    twice = dataclasses.replace(h, col_idx=col_idx)  # to_dense refuses it too
    x = rng.standard_normal((2, 64)).astype(np.float32)
    for call in (lambda: hinm.linear(x, twice), lambda: hinm.spmm(twice, x.T.copy())):
        with pytest.raises(ValueError, match=rf"col_idx\[1\] lists column {col_idx[1, 0]} twice"):
            call()


@needs_torch
def test_torch_col_idx_edits_are_checked_again(rng):
    import torch

    h = hinm.compress(torch.from_numpy(rng.standard_normal((32, 64)).astype(np.float32)), hinm.HiNMConfig(16, 0.5, 2, 4))
    x = torch.from_numpy(rng.standard_normal((1, 64)).astype(np.float32))
    y = hinm.linear(x, h)
    assert ops._fast(h) is not None
    saved = h.col_idx.clone()
    h.col_idx[0, 1] = h.col_idx[0, 0]
    with pytest.raises(ValueError, match="twice"):
        hinm.linear(x, h)
    h.col_idx.copy_(saved)
    assert torch.equal(hinm.linear(x, h), y)
