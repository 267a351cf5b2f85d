"""The small-batch ("rows") kernels and the per-call fast path of hinm.linear / hinm.spmm: batch
1..4 against a float64 reference for odd shapes whose value rows end in a partial step of 16, every
pattern, dtype and kernel variant, with bias / out= / accumulate; thread-count independence at a
size that uses two threads; the cached prepared weight (in-place edits are seen, replaced arrays
are re-read, errors keep their messages); torch in, torch out."""

import dataclasses

import numpy as np
import pytest

import hinm
from hinm import _C, ops
from conftest import needs_torch
from test_ops import PATTERNS, VARIANTS, assert_thread_independent, check_close, make_hinm


@pytest.fixture(params=VARIANTS, ids=["best", "generic"])
def variant(request):
    _C.spmm_force_isa(request.param)
    yield request.param
    _C.spmm_force_isa("")


@pytest.mark.parametrize("n,m", PATTERNS)
def test_small_batches_with_partial_steps(rng, variant, n, m):
    # groups per row: 1 (tail only), 9, 17 and 33 (whole steps of 16 values plus a tail for every n)
    for groups in (1, 9, 17, 33):
        k = m * groups + 3 if groups > 1 else m * groups  # plain N:M needs K % m == 0; HiNM drops columns
        nm = hinm.compress_nm(rng.standard_normal((37, m * groups)).astype(np.float32), n, m)
        cases = [(nm, nm.to_dense().astype(np.float64))]  # plain N:M: activations used in place
        cases += [make_hinm(rng, r, k, v, n, m, kept=m * groups) for r, v in ((45, 16), (130, 200))]
        for w, dense in cases:
            r, kk = dense.shape
            bias = rng.standard_normal(r).astype(np.float32)
            for batch in (1, 2, 3, 4, 6):
                x = rng.standard_normal((batch, kk)).astype(np.float32)
                ref = x.astype(np.float64) @ dense.T
                check_close(hinm.linear(x, w), ref, dense, x)
                out = np.ones((batch, r), np.float32)
                hinm.linear(x, w, bias, out=out, accumulate=True)
                scale = np.abs(x) @ np.abs(dense).T + np.abs(bias) + 1  # the sum's own rounding
                assert np.max(np.abs(out - (ref + bias + 1)) / scale) < 2e-6
                check_close(hinm.spmm(w, np.ascontiguousarray(x.T)).T, ref, dense, x)


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16", "int8"])
def test_small_batches_every_value_dtype(rng, variant, dtype):
    if dtype == "bfloat16":
        pytest.importorskip("torch")
    for n, m in ((2, 4), (1, 4)):
        w, dense = make_hinm(rng, 75, 4 * 37, 32, n, m, kept=4 * 29, dtype=dtype)
        for batch in (1, 2, 3, 4):
            x = rng.standard_normal((batch, 4 * 37)).astype(np.float32)
            check_close(hinm.linear(x, w), x.astype(np.float64) @ dense.T, dense, x)


def test_spmm_with_a_strided_single_column(rng, variant):
    t = hinm.compress_nm(rng.standard_normal((50, 72)).astype(np.float32), 2, 4)
    dense = t.to_dense().astype(np.float64)
    wide = rng.standard_normal((72, 5)).astype(np.float32)
    b = wide[:, 1:2]  # one column, row stride 5
    check_close(hinm.spmm(t, b).T, (dense @ b.astype(np.float64)).T, dense, b.T)


def test_small_batches_do_not_depend_on_thread_count(rng):
    nm = hinm.compress_nm(rng.standard_normal((1100, 1028)).astype(np.float32), 2, 4)
    w, _ = make_hinm(rng, 1100, 1028, 64, 2, 4, kept=516)
    for weight in (nm, w):
        for batch in (1, 2, 3, 4):
            assert_thread_independent(weight, rng.standard_normal((batch, 1028)).astype(np.float32))


def test_prepared_weight_follows_the_arrays(rng):
    t = hinm.compress_nm(rng.standard_normal((40, 64)).astype(np.float32), 2, 4)
    x = rng.standard_normal((1, 64)).astype(np.float32)
    hinm.linear(x, t)
    assert ops._fast(t) is not None  # the second call takes the fast path
    t.values[3] *= 2  # in-place edit: seen by the next call
    check_close(hinm.linear(x, t), x.astype(np.float64) @ t.to_dense().T, t.to_dense(), x)
    object.__setattr__(t, "values", t.values * -1)  # a new array: not the prepared one
    assert ops._fast(t) is None
    check_close(hinm.linear(x, t), x.astype(np.float64) @ t.to_dense().T, t.to_dense(), x)
    # leading dims and 1-D activations on the fast path
    x3 = rng.standard_normal((2, 3, 64)).astype(np.float32)
    y3 = hinm.linear(x3, t)
    assert y3.shape == (2, 3, 40)
    check_close(y3.reshape(6, 40), x3.reshape(6, 64).astype(np.float64) @ t.to_dense().T, t.to_dense(), x3.reshape(6, 64))
    out3 = np.zeros((2, 3, 40), np.float32)
    assert hinm.linear(x3, t, out=out3) is out3 and np.array_equal(out3, y3)
    y1 = hinm.linear(x3[0, 0], t)
    assert y1.shape == (40,) and np.array_equal(y1, y3[0, 0])
    # errors on the fast path still name the argument
    with pytest.raises(ValueError, match="out must have shape"):
        hinm.linear(x, t, out=np.zeros((1, 39), np.float32))
    with pytest.raises(TypeError, match="x must be float32"):
        hinm.linear(x.astype(np.float64), t)
    with pytest.raises(ValueError, match="bias must have shape"):
        hinm.linear(x, t, np.zeros((1, 40), np.float32))
    with pytest.raises(ValueError, match="out must be contiguous"):
        hinm.linear(np.zeros((40, 64), np.float32), t, out=np.zeros((40, 40), np.float32).T)


@needs_torch
def test_fast_path_with_torch_tensors(rng):
    import torch

    t = hinm.compress_nm(rng.standard_normal((40, 64)).astype(np.float32), 2, 4)
    dense = t.to_dense().astype(np.float64)
    x = torch.randn(3, 64)
    for _ in range(2):  # the second call takes the fast path
        y = hinm.linear(x, t)
        assert isinstance(y, torch.Tensor) and y.shape == (3, 40)
        check_close(y.numpy(), x.double().numpy() @ dense.T, dense, x.numpy())
    out = torch.zeros(3, 40)
    assert hinm.linear(x, t, torch.ones(40), out=out) is out
    check_close(out.numpy(), x.double().numpy() @ dense.T + 1, dense, x.numpy())
    b = torch.randn(64, 2)
    z = hinm.spmm(t, b)
    assert isinstance(z, torch.Tensor)
    check_close(z.T.numpy(), (dense @ b.double().numpy()).T, dense, b.T.numpy())
    xg = x.clone().requires_grad_(True)  # not a plain tensor: the generic path handles it
    check_close(hinm.linear(xg, t).detach().numpy(), x.double().numpy() @ dense.T, dense, x.numpy())


def test_weight_streaming_from_memory_matches_the_portable_kernels(rng):
    # values + positions over 16 MiB: the AVX-512 rows kernel prefetches the next row group
    t = hinm.compress_nm(rng.standard_normal((2048, 3400)).astype(np.float32), 2, 4)
    assert t.values.nbytes + t.indices.nbytes > 16 * 2**20
    x = rng.standard_normal((1, 3400)).astype(np.float32)
    best = hinm.linear(x, t)
    try:
        _C.spmm_force_isa("generic")
        portable = hinm.linear(x, t)
    finally:
        _C.spmm_force_isa("")
    scale = np.abs(x) @ np.abs(t.values).repeat(2, axis=1).T + 1e-3  # the size of |x| @ |W|ᵀ
    assert np.max(np.abs(best - portable) / scale) < 1e-5


@pytest.mark.parametrize("n,m", [(1, 2), (2, 4)])
def test_position_words_give_the_bits_of_the_byte_positions(rng, n, m):
    # Read-only indices: the rows kernels read 2-bit position words cached with the weight; the
    # same arrays made writeable: the byte positions (nothing cached). Whole steps and a tail,
    # row counts off the 8-row blocks, HiNM gathers, the prefetching variant on a 17 MiB weight.
    nm = hinm.compress_nm(rng.standard_normal((77, 37 * m)).astype(np.float32), n, m)
    hi, _ = make_hinm(rng, 45, 33 * m + 5, 12, n, m, kept=33 * m)
    big = hinm.compress_nm(rng.standard_normal((2048, 3400)).astype(np.float32), 2, 4) if m == 4 else nm
    for w in (nm, hi, big):
        parts = ops._weight(w)
        assert _C.spmm_masks_layout(*parts.args()) == ("uint32", int(w.values.shape[1]) // 16)
        words = np.empty((int(w.values.shape[0]), int(w.values.shape[1]) // 16), np.uint32)
        _C.build_spmm_masks(*parts.args(), words)
        fields = (words[:, :, None] >> (2 * np.arange(16, dtype=np.uint32))) & 3
        assert np.array_equal(fields.reshape(len(words), -1), w.indices[:, :words.shape[1] * 16])
        if isinstance(w, hinm.NMTensor):  # the same arrays, the indices a writeable copy: read as bytes
            plain = hinm.NMTensor(w.values, np.array(w.indices), w.shape, w.n, w.m)
        else:
            plain = dataclasses.replace(w, indices=np.array(w.indices))
        for batch in (1, 2, 3, 4, 7, 12):
            x = rng.standard_normal((batch, int(w.shape[1]))).astype(np.float32)
            got = hinm.linear(x, w)
            assert ops._MASKS[w][3][1].dtype == np.uint32  # the words were used
            assert np.array_equal(got, hinm.linear(x, plain))
            if w is big:
                break


@pytest.mark.parametrize("batch", [1, 4, 32])
def test_corrupted_col_idx_is_refused_on_every_path(rng, variant, batch):
    # The rows path (batch <= 12) checks col_idx in its gathers, the panel path in a separate pass;
    # an in-place edit after the weight was prepared must still be caught, never read out of bounds.
    w, _ = make_hinm(rng, 130, 70, 32, 2, 4, kept=32)
    x = rng.standard_normal((batch, 70)).astype(np.float32)
    hinm.linear(x, w)
    hinm.linear(x, w)  # prepared
    for bad in (70, -1, 1 << 30):
        w.col_idx[3, 17] = bad
        with pytest.raises(ValueError, match=rf"col_idx\[{3 * 32 + 17}\]={bad} is outside \[0, 70\)"):
            hinm.linear(x, w)
        with pytest.raises(ValueError, match="col_idx"):
            hinm.spmm(w, x.T.copy())
    w.col_idx[3, 17] = 5 if 5 not in w.col_idx[3] else next(c for c in range(70) if c not in w.col_idx[3])
    hinm.linear(x, w)  # repaired: runs again


PACKED_PATTERNS = [(1, 2), (2, 4), (4, 8), (8, 16)]  # m = 2n: the patterns with a rows pack


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16", "int8"])
@pytest.mark.parametrize("n,m", PACKED_PATTERNS)
def test_prepacked_weight_gives_the_same_bits(rng, variant, dtype, n, m):
    # Rows before the first 8-slot block boundary, whole blocks, and rows after the last one
    # (v = 12, 45 rows: tiles start off the 8-slot grid); whole steps of 16 values plus a tail.
    if dtype == "bfloat16":
        pytest.importorskip("torch")
    cases = [make_hinm(rng, r, k, v, n, m, kept=kept, dtype=dtype)
             for r, k, v, kept in ((45, 33 * m + 5, 12, 33 * m), (130, 20 * m + 6, 32, 20 * m), (64, 160, 64, 10 * m))]
    if dtype == "float32":
        nm = hinm.compress_nm(rng.standard_normal((77, 37 * m)).astype(np.float32), n, m)
        cases.append((nm, nm.to_dense().astype(np.float64)))
    for w, dense in cases:
        packed = hinm.prepack(w)
        assert packed.shape == tuple(int(s) for s in w.shape) and packed.weight is w
        assert (packed.nbytes > 0) == (int(w.values.shape[1]) >= 16)
        for batch in (1, 2, 3, 4, 7, 12, 13):
            x = rng.standard_normal((batch, dense.shape[1])).astype(np.float32)
            got = hinm.linear(x, packed)
            assert np.array_equal(got, hinm.linear(x, w))
            check_close(got, x.astype(np.float64) @ dense.T, dense, x)
            assert np.array_equal(hinm.spmm(packed, x.T.copy()), hinm.spmm(w, x.T.copy()))
        assert_thread_independent(packed, rng.standard_normal((3, dense.shape[1])).astype(np.float32))


def test_prepack_follows_edits_when_redone_and_keeps_the_api(rng, monkeypatch):
    w, dense = make_hinm(rng, 100, 96, 16, 2, 4, kept=48)
    x = rng.standard_normal((1, 96)).astype(np.float32)
    packed = hinm.prepack(w)
    assert hinm.prepack(packed) is packed
    w.values[:] *= 2  # the old pack is stale now; a new one follows the edit
    packed, dense = hinm.prepack(w), dense * 2
    assert np.array_equal(hinm.linear(x, packed), hinm.linear(x, w))
    # bias, out=, accumulate, leading dims, errors with the weight's own messages
    bias = rng.standard_normal(100).astype(np.float32)
    out = np.ones((1, 100), np.float32)
    hinm.linear(x, packed, bias, out=out, accumulate=True)
    check_close(out - 1 - bias, x.astype(np.float64) @ dense.T, dense, x)
    assert hinm.linear(rng.standard_normal((2, 3, 96)).astype(np.float32), packed).shape == (2, 3, 100)
    with pytest.raises(ValueError, match=r"x must have shape \[\.\.\., 96\]"):
        hinm.linear(x[:, :95], packed)
    with pytest.raises(TypeError, match="x must be float32"):
        hinm.linear(x.astype(np.float64), packed)
    with pytest.raises(TypeError, match="NMTensor or a HiNM tensor"):
        hinm.prepack(np.zeros((4, 4), np.float32))
    # patterns without a pack (m != 2n) behave exactly like the weight
    w14, _ = make_hinm(rng, 40, 64, 16, 1, 4, kept=32)
    assert hinm.prepack(w14).nbytes == 0
    assert np.array_equal(hinm.linear(x[:, :64], hinm.prepack(w14)), hinm.linear(x[:, :64], w14))
    monkeypatch.setattr(ops, "is_cuda", lambda a: True)
    with pytest.raises(ValueError, match="prepack: the weight is on a GPU"):
        hinm.prepack(w)


def test_rows_pack_arrays_are_checked(rng):
    w, _ = make_hinm(rng, 64, 64, 16, 2, 4, kept=32)
    parts = ops._weight(w)
    size, position_bytes = _C.rows_pack_sizes(*parts.args())
    assert (size, position_bytes) == (64 // 8 * (16 // 16) * 128, 64 // 8 * (16 // 16) * 128 // 4)  # 2-bit positions
    good_v, good_i = np.zeros(size, np.float32), np.zeros(position_bytes, np.uint8)
    message = f"1-D contiguous arrays of {size} values and {position_bytes} position bytes"
    for values, positions in ((good_v[:-1], good_i), (good_v, good_i[:-1]), (good_v, np.zeros(size, np.uint8))):
        with pytest.raises(ValueError, match=message):
            _C.spmm_weight(*parts.args(), None, values, positions)
    with pytest.raises(TypeError, match="dtype differs"):
        _C.spmm_weight(*parts.args(), None, good_v.astype(np.float16), good_i)
    with pytest.raises(ValueError, match="need both"):
        _C.spmm_weight(*parts.args(), None, good_v, None)
    w48, _ = make_hinm(rng, 64, 64, 16, 4, 8, kept=32)
    assert tuple(_C.rows_pack_sizes(*ops._weight(w48).args())) == (size, size)  # byte positions for m > 4
    w.indices = w.indices.copy()  # hinm's own indices are read-only
    w.indices[3, 5] = 4  # corrupted: a 2:4 position must be < 4
    with pytest.raises(ValueError, match="weight: positions: group 2 of row 3"):
        hinm.prepack(w)  # checked before packing
    with pytest.raises(ValueError, match="positions: group 2 of row 3 "):
        _C.pack_rows(*ops._weight(w).args(), good_v, good_i)  # and by the packer itself
