"""N:M masks and the NMTensor container against a slow numpy reference."""

import numpy as np
import pytest

import hinm

from conftest import needs_torch

PATTERNS = [(1, 2), (2, 4), (1, 4), (1, 8), (2, 8), (4, 8), (3, 16)]


def ref_nm_mask(scores, n, m):
    """Keep the n largest of each group of m; ties to the lower index (stable sort on -score)."""
    g = scores.reshape(-1, m)
    order = np.argsort(-g, axis=1, kind="stable")[:, :n]
    mask = np.zeros(g.shape, bool)
    np.put_along_axis(mask, order, True, axis=1)
    return mask.reshape(scores.shape)


@pytest.mark.parametrize("n,m", PATTERNS)
def test_nm_mask_matches_reference(rng, n, m, threads):
    scores = rng.standard_normal((13, 5 * m)).astype(np.float32)
    scores[0, :m] = 1.0  # a group of ties
    np.testing.assert_array_equal(hinm.nm_mask(scores, n, m), ref_nm_mask(scores, n, m))


@pytest.mark.parametrize("n,m", PATTERNS)
@pytest.mark.parametrize("dtype", ["float32", "float16", "int8"])
def test_compress_roundtrip_bit_exact(rng, n, m, dtype):
    w = (rng.standard_normal((9, 3 * m)) * 20).astype(dtype)
    t = hinm.compress_nm(w, n, m)
    expect = np.where(ref_nm_mask(np.abs(w.astype(np.float32)), n, m), w, 0).astype(dtype)
    np.testing.assert_array_equal(t.to_dense().view(np.uint8), expect.view(np.uint8))
    assert t.values.shape == (9, 3 * n) and t.indices.dtype == np.uint8


def test_bad_inputs_raise(rng):
    w = rng.standard_normal((4, 8)).astype(np.float32)
    with pytest.raises(ValueError, match="n < m"):
        hinm.compress_nm(w, 4, 4)
    with pytest.raises(ValueError, match="multiple of m"):
        hinm.compress_nm(w[:, :6], 2, 4)
    with pytest.raises(TypeError, match="float64"):
        hinm.compress_nm(w.astype(np.float64), 2, 4)
    bad = w.copy()
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        hinm.nm_mask(bad, 2, 4)
    for dtype in (np.float32, np.float16):  # |W| scores: a NaN weight is no score
        with pytest.raises(ValueError, match=r"weight contains NaN \(first at row 1, column 2\)"):
            hinm.compress_nm(bad.astype(dtype), 2, 4)


@needs_torch
def test_torch_in_torch_out_bfloat16():
    import torch

    w = torch.randn(8, 16, dtype=torch.bfloat16)
    t = hinm.compress_nm(w, 2, 4)
    assert isinstance(t.values, torch.Tensor) and t.values.dtype == torch.bfloat16
    keep = torch.from_numpy(ref_nm_mask(w.float().abs().numpy(), 2, 4))
    assert torch.equal(t.to_dense(), torch.where(keep, w, torch.zeros_like(w)))


# --- property tests and state dicts -------------------------------------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=60, deadline=None)
@given(
    pattern=st.sampled_from(PATTERNS),
    rows=st.integers(1, 9),
    groups=st.integers(1, 6),
    dtype=st.sampled_from(["float32", "float16", "int8"]),
    seed=st.integers(0, 2**31 - 1),
)
def test_property_roundtrip_and_state_dict(pattern, rows, groups, dtype, seed):
    n, m = pattern
    r = np.random.default_rng(seed)
    w = (r.integers(-3, 4, size=(rows, groups * m)) * r.random((rows, groups * m)) * 8).astype(dtype)
    t = hinm.compress_nm(w, n, m)
    dense = t.to_dense()
    assert dense.dtype == w.dtype
    kept = dense != 0
    assert (kept.reshape(rows, groups, m).sum(-1) <= n).all()
    np.testing.assert_array_equal(dense[kept], w[kept])
    # what was dropped is never larger (in |w|) than what was kept in the same group
    absd = np.abs(w.astype(np.float32)).reshape(rows, groups, m)
    keep = ref_nm_mask(absd, n, m)
    assert (np.where(keep, absd, np.inf).min(-1) >= np.where(keep, -np.inf, absd).max(-1)).all()
    t2 = hinm.NMTensor.from_state_dict(t.state_dict())
    np.testing.assert_array_equal(t2.to_dense().view(np.uint8), dense.view(np.uint8))


def test_custom_scores_choose_what_is_kept(rng):
    w = rng.standard_normal((4, 8)).astype(np.float32)
    scores = np.tile(np.arange(8, dtype=np.float32), (4, 1))  # keep the last two of each group
    t = hinm.compress_nm(w, 2, 4, scores=scores)
    expect = np.where(np.tile([False, False, True, True], 8)[:8], w, 0)
    np.testing.assert_array_equal(t.to_dense(), expect)
    with pytest.raises(ValueError, match="shape"):
        hinm.compress_nm(w, 2, 4, scores=scores[:, :4])


def test_nm_mask_any_rank_and_torch(rng):
    s = rng.standard_normal((2, 3, 8)).astype(np.float32)
    np.testing.assert_array_equal(hinm.nm_mask(s, 1, 4), ref_nm_mask(s.reshape(-1, 8), 1, 4).reshape(s.shape))
    with pytest.raises(ValueError, match="dimension"):
        hinm.nm_mask(np.float32(1.0), 1, 2)


def _sd(rng):
    # copies: the tensor's own indices are read-only
    sd = hinm.compress_nm(rng.standard_normal((4, 8)).astype(np.float32), 2, 4).state_dict()
    return {k: v.copy() for k, v in sd.items()}


@pytest.mark.parametrize(
    "corrupt, match",
    [
        (lambda sd: sd.pop("values"), "missing 'values'"),
        (lambda sd: sd.update(format_version=np.array([99])), "format version"),
        (lambda sd: sd.update(pattern=np.array([4, 4])), "bad pattern"),
        (lambda sd: sd.update(shape=np.array([4, 10])), "invalid"),
        (lambda sd: sd.update(values=sd["values"][:, :3]), "shape"),
        (lambda sd: sd.update(values=sd["values"].astype(np.float64)), "dtype"),
        (lambda sd: sd["indices"].__setitem__((0, 0), 7), "strictly increasing"),
        (lambda sd: sd["indices"].__setitem__((1, 1), sd["indices"][1, 0]), "strictly increasing"),
        (lambda sd: sd.update(shape=np.array([4.0, 8.0])), "integers"),
    ],
)
def test_corrupted_state_dict_is_rejected(rng, corrupt, match):
    sd = _sd(rng)
    corrupt(sd)
    with pytest.raises(ValueError, match=match):
        hinm.NMTensor.from_state_dict(sd)


def test_state_dict_must_be_a_mapping():
    with pytest.raises(TypeError):
        hinm.NMTensor.from_state_dict([1, 2, 3])


def test_bad_weight_shapes_and_strides(rng):
    w = rng.standard_normal((4, 8)).astype(np.float32)
    with pytest.raises(ValueError, match="2-D"):
        hinm.compress_nm(w.reshape(2, 2, 8), 2, 4)
    # a transposed (non-contiguous) input is accepted: it is made contiguous once, correctly
    t = hinm.compress_nm(np.asfortranarray(w), 2, 4)
    np.testing.assert_array_equal(t.to_dense(), hinm.compress_nm(w, 2, 4).to_dense())
    with pytest.raises(TypeError, match="not supported"):
        hinm.compress_nm(w.astype(np.int32), 2, 4)
    with pytest.raises(TypeError, match="n and m must be integers"):
        hinm.compress_nm(w, 2.5, 4)
    with pytest.raises(TypeError, match="n and m must be integers"):  # as NMConfig(True, 4)
        hinm.nm_mask(w, True, 4)
    assert hinm.nm_mask(w, np.int64(2), np.uint8(4)).sum() == w.size // 2  # numpy integers are integers


@needs_torch
def test_torch_inputs_are_not_copied():
    import torch

    w = torch.randn(8, 16)
    from hinm._arrays import as_array, contiguous

    assert contiguous(as_array(w)).data_ptr() == w.data_ptr()
    t = hinm.compress_nm(w, 2, 4)
    assert isinstance(t.to_dense(), torch.Tensor)


@pytest.mark.parametrize("n,m", [(1, 4), (2, 4), (3, 8)])
def test_position_check_names_the_first_bad_group_for_any_thread_count(rng, n, m):
    from hinm import _C

    t = hinm.compress_nm(rng.standard_normal((1000, 16 * m)).astype(np.float32), n, m)
    ok = t.indices.copy()
    bad = ok.copy()
    bad[700, 2 * n] = m  # out of range (group 2)
    bad[300, n * 5 + n - 1] = bad[300, n * 5 + n - 2] if n > 1 else m  # group 5: repeated or out of range
    before = hinm.get_num_threads()
    try:
        for threads in (1, 2):
            hinm.set_num_threads(threads)
            _C.validate_nm_positions(ok, n, m)
            with pytest.raises(ValueError, match="group 5 of row 300 "):
                _C.validate_nm_positions(bad, n, m)
    finally:
        hinm.set_num_threads(before)
