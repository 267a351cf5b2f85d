"""The "panel" path of hinm.linear / hinm.spmm (batches past the few-activation kernels) against a
float64 reference: batch sizes on both sides of every lane-block width (8, 16, 24, 32, 48, 64) and of
two blocks, K long enough for several panel chunks, rows that leave partial row blocks, patterns
whose m is not a power of two, converted value dtypes, strided x, permuted rows stored bit-identically,
and every CPU kernel variant."""

import dataclasses

import numpy as np
import pytest

import hinm
from hinm import _C
from test_ops import check_close, make_hinm

BATCHES = (5, 8, 9, 16, 17, 24, 25, 33, 48, 49, 64, 65, 129)


@pytest.fixture(params=["", "avx2", "generic"], ids=["best", "avx2", "generic"])
def variant(request):
    _C.spmm_force_isa(request.param)
    yield request.param
    _C.spmm_force_isa("")


def reference(x, dense):
    return x.astype(np.float64) @ dense.T


@pytest.mark.parametrize("n,m,v,kept_groups", [(2, 4, 64, 40), (2, 4, 32, 150), (1, 4, 128, 24), (2, 6, 32, 30),
                                              (4, 8, 64, 20)])
def test_panel_batches_chunks_and_row_blocks(rng, variant, n, m, v, kept_groups):
    r = 2 * v + 3  # a padded last tile, and row counts that are no multiple of the row blocks
    kept = m * kept_groups
    k = kept + 2 * m
    w, dense = make_hinm(rng, r, k, v, n, m, kept=kept, permute=v != 64)  # v=64: rows in order (vector store)
    for batch in BATCHES:
        x = rng.standard_normal((batch, k)).astype(np.float32)
        check_close(hinm.linear(x, w), reference(x, dense), dense, x)
        b = np.ascontiguousarray(x.T)
        check_close(hinm.spmm(w, b).T, reference(x, dense), dense, x)


@pytest.mark.parametrize("dtype", ["float16", "int8", "bfloat16"])
def test_panel_converted_values(rng, variant, dtype):
    if dtype == "bfloat16":
        pytest.importorskip("torch")
    w, dense = make_hinm(rng, 70, 4 * 50, 32, 2, 4, kept=4 * 45, dtype=dtype)
    for batch in (8, 40, 100, 300):  # 300: five 64-lane blocks, converted two at a time (the last alone)
        x = rng.standard_normal((batch, 200)).astype(np.float32)
        check_close(hinm.linear(x, w), reference(x, dense), dense, x)
    # 450 rows: eight 64-lane blocks; shared out whole on 1, 2 and 4 threads, where the values are
    # converted once for the call (two or more blocks per thread), as (block, item) units on 3
    try:
        x = rng.standard_normal((450, 200)).astype(np.float32)
        results = []
        for threads in (1, 2, 3, 4):
            hinm.set_num_threads(threads)
            results.append(hinm.linear(x, w))
        check_close(results[0], reference(x, dense), dense, x)
        assert all(np.array_equal(results[0], y) for y in results[1:])
    finally:
        hinm.set_num_threads(0)


def test_panel_plain_nm_strided_x_bias_and_accumulate(rng, variant):
    t = hinm.compress_nm(rng.standard_normal((67, 4 * 70)).astype(np.float32), 2, 4)
    dense = t.to_dense().astype(np.float64)
    bias = rng.standard_normal(67).astype(np.float32)
    for batch in (7, 31, 97):
        wide = rng.standard_normal((batch, 4 * 70 + 5)).astype(np.float32)
        x = wide[:, 3:3 + 4 * 70]  # rows 4*70+5 floats apart
        out = np.full((batch, 67), 0.5, np.float32)
        hinm.linear(x, t, bias, out=out, accumulate=True)
        check_close(out, reference(x, dense) + bias + 0.5, dense, x)


def test_panel_results_do_not_depend_on_thread_count(rng):
    w, _ = make_hinm(rng, 200, 4 * 80, 64, 2, 4, kept=4 * 60)
    try:
        for batch in (8, 64, 129):
            x = rng.standard_normal((batch, 4 * 80)).astype(np.float32)
            hinm.set_num_threads(1)
            one = hinm.linear(x, w)
            hinm.set_num_threads(2)
            assert np.array_equal(one, hinm.linear(x, w))
    finally:
        hinm.set_num_threads(0)


def test_whole_block_sharing_gives_the_same_bits(rng, variant):
    # With enough 64-lane blocks, each thread takes whole blocks (transpose, every row item, the
    # row permutation of the block's outputs) when they split evenly or are many; otherwise the
    # units are (block, item) pairs. The thread counts put each batch on both sides of that
    # choice: 2 blocks whole at 1 and 2 threads, items at 3; 3 blocks whole at 1 and 3, items at
    # 2; 8 blocks whole at 1 and 2, items at 3; a padded last block each time. Batches 19-64 fit
    # one block on one thread but are split into blocks of 16 or 32 lanes on more (19 and 64 on
    # 2 threads: two blocks of 16 and 32; 40 stays one 48-lane block on 2 threads, three of 16 on 3).
    w, dense = make_hinm(rng, 150, 200, 32, 2, 4, kept=120)  # permuted rows, a padded last tile
    same_rows = dataclasses.replace(w, row_perm=np.arange(150, dtype=np.int64))
    bias = rng.standard_normal(150).astype(np.float32)
    try:
        for batch in (19, 40, 64, 100, 130, 450):
            x = rng.standard_normal((batch, 200)).astype(np.float32)
            results = []
            for threads in (1, 2, 3):
                hinm.set_num_threads(threads)
                y = hinm.linear(x, w, bias)
                assert np.array_equal(y[:, w.row_perm], hinm.linear(x, same_rows, bias[w.row_perm]))
                results.append(y)
            check_close(results[0] - bias, reference(x, dense), dense, x)
            assert all(np.array_equal(results[0], y) for y in results[1:])
    finally:
        hinm.set_num_threads(0)


def test_permuted_rows_are_stored_bit_identically(rng, variant):
    # Both paths (rows: batch <= 12, panel) store a permuted weight's x Wᵀ in slot order and then
    # permute every output row (bias added there): the same additions as storing each slot's
    # result where it belongs.
    w, dense = make_hinm(rng, 150, 200, 32, 2, 4, kept=120)  # permuted rows, a padded last tile
    same_rows = dataclasses.replace(w, row_perm=np.arange(150, dtype=np.int64))
    bias = rng.standard_normal(150).astype(np.float32)
    for batch in (1, 3, 8, 13, 64, 100):
        x = rng.standard_normal((batch, 200)).astype(np.float32)
        y = hinm.linear(x, w, bias)
        check_close(y - bias, reference(x, dense), dense, x)
        assert np.array_equal(y[:, w.row_perm], hinm.linear(x, same_rows, bias[w.row_perm]))
        out = np.ones((batch, 150), np.float32)
        hinm.linear(x, w, bias, out=out, accumulate=True)  # accumulating: each slot stored in place
        assert np.array_equal(out, np.float32(1) + y)


def test_prepacked_2to4_float32_panel_gives_the_same_bits(rng, variant):
    # A float32 2:4 weight's rows pack is read by the AVX-512 panel kernel too (chunks inside whole
    # 8-slot blocks and 16-value steps; the rest from the weight): the same FMAs in the same order.
    # Cases: tiles starting off the 8-slot grid (v = 12) with rows past the last whole block;
    # several 64-column chunks plus a chunk past the last whole step; plain N:M with 77 rows.
    cases = [make_hinm(rng, 45, 4 * 60 + 6, 12, 2, 4, kept=4 * 53), make_hinm(rng, 150, 4 * 90, 32, 2, 4, kept=4 * 85)]
    nm = hinm.compress_nm(rng.standard_normal((77, 4 * 70)).astype(np.float32), 2, 4)
    cases.append((nm, nm.to_dense().astype(np.float64)))
    bias = rng.standard_normal(150).astype(np.float32)
    try:
        for w, dense in cases:
            rows, cols = dense.shape
            packed = hinm.prepack(w)
            for batch in (13, 19, 40, 64, 100, 130):
                x = rng.standard_normal((batch, cols)).astype(np.float32)
                results = []
                for threads in (1, 2, 3):
                    hinm.set_num_threads(threads)
                    y = hinm.linear(x, packed, bias[:rows])
                    assert np.array_equal(y, hinm.linear(x, w, bias[:rows]))
                    results.append(y)
                    assert np.array_equal(hinm.spmm(packed, x.T.copy()), hinm.spmm(w, x.T.copy()))
                assert all(np.array_equal(results[0], y) for y in results[1:])
                check_close(results[0] - bias[:rows], reference(x, dense), dense, x)
    finally:
        hinm.set_num_threads(0)
