"""CPU-side parts of the CUDA path: the device-ready layout (against the golden sptc lane words and
the PTX fragment rule) and clean errors where no GPU is usable. The kernel itself is checked by
tests/cpp/test_cuda_emulation.cpp (CPU emulation) and tests/gpu/ (on a GPU)."""

from pathlib import Path

import numpy as np
import pytest

import hinm
from hinm import _C, _cuda

torch = pytest.importorskip("torch")

DATA = Path(__file__).resolve().parents[1] / "data" / "sptc"


def _pack(values, positions, rows, cols, v, kept):
    slots = -(-rows // v) * v
    fr, fc, lr, lc = _C.cuda_layout_shape(slots, kept)
    frag = torch.empty((fr, fc), dtype=values.dtype)
    words = torch.empty((lr, lc), dtype=torch.uint32)
    _C.cuda_pack_layout(values, positions, rows, cols, v, kept, frag, words)
    return frag, words


def _positions_from_dense(dense: np.ndarray) -> np.ndarray:
    m, k = dense.shape
    pos = np.zeros((m, k // 2), np.uint8)
    for r in range(m):
        for q in range(k // 4):
            nz = np.flatnonzero(dense[r, 4 * q:4 * q + 4])
            assert len(nz) == 2
            pos[r, 2 * q:2 * q + 2] = nz
    return pos


@pytest.mark.parametrize("name", ["f16_32x64", "bf16_64x128"])
def test_lane_words_equal_the_golden_cutlass_blocks(name):
    d = np.load(DATA / f"{name}.npz")
    dense, vals = d["dense"], d["values"]
    if name.startswith("bf16"):
        values = torch.from_numpy(vals.view(np.int16)).view(torch.bfloat16)
        nz = dense != 0  # bit patterns: 0 is +0.0
    else:
        values = torch.from_numpy(vals)
        nz = dense != 0
    m, k = dense.shape
    pos = _positions_from_dense(nz.astype(np.uint8))
    _, words = _pack(values, torch.from_numpy(pos), m, k, m, k)
    ks = words.shape[1] // 32
    mine = words.numpy().reshape(-1, ks, 32)
    golden = d["lane_words"]
    for rb in range(m // 32):
        for c2 in range(k // 32):  # CUTLASS orders blocks K-slice major: c2 * (m/32) + R
            np.testing.assert_array_equal(mine[rb, c2], golden[c2 * (m // 32) + rb])
    # padding columns and rows carry the legal code (0, 1) in every nibble
    assert (mine[:, k // 32:] == 0x44444444).all()
    assert (mine[m // 32:] == 0x44444444).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_fragment_values_follow_the_ptx_a_fragment(dtype):
    rng = np.random.default_rng(3)
    rows, kept, v = 40, 72, 40
    vals = torch.from_numpy(rng.integers(-50, 50, (rows, kept // 2)).astype(np.float32)).to(dtype)
    pos = torch.tensor([[0, 1], [1, 3]], dtype=torch.uint8).repeat(rows, kept // 8).reshape(rows, kept // 2)
    frag, _ = _pack(vals, pos, rows, kept, v, kept)
    ks = frag.shape[1] * 2 // 32
    f = frag.float().numpy().reshape(-1, ks, 32, 8)
    ref = np.zeros((f.shape[0] * 16, ks * 16), np.float32)
    ref[:rows, :kept // 2] = vals.float().numpy()
    for mi in range(f.shape[0]):
        for kk in range(ks):
            for lane in range(32):
                g, t = divmod(lane, 4)
                r0, c0 = 16 * mi, 16 * kk
                expect = [ref[r0 + g, c0 + 2 * t], ref[r0 + g, c0 + 2 * t + 1],
                          ref[r0 + g + 8, c0 + 2 * t], ref[r0 + g + 8, c0 + 2 * t + 1],
                          ref[r0 + g, c0 + 8 + 2 * t], ref[r0 + g, c0 + 9 + 2 * t],
                          ref[r0 + g + 8, c0 + 8 + 2 * t], ref[r0 + g + 8, c0 + 9 + 2 * t]]
                np.testing.assert_array_equal(f[mi, kk, lane], expect)


def test_pack_rejects_bad_patterns_and_positions():
    vals = torch.zeros((32, 32), dtype=torch.float16)
    pos = torch.tensor([0, 1], dtype=torch.uint8).repeat(32, 16)
    _pack(vals, pos, 32, 64, 32, 64)
    bad = pos.clone()
    bad[3, 4] = 1  # group (1, 1)
    with pytest.raises(ValueError, match="strictly increasing"):
        _pack(vals, bad, 32, 64, 32, 64)
    with pytest.raises(ValueError, match="float16 or bfloat16"):
        _pack(vals.float(), pos, 32, 64, 32, 64)


def test_cuda_entry_points_fail_cleanly_without_a_gpu():
    w = hinm.compress_nm(torch.randn(64, 128).half(), 2, 4)
    x = torch.randn(8, 128).half()
    if not hinm.built_with_cuda():
        for call in (lambda: _cuda.linear_cuda(x, w), lambda: _cuda.spmm_cuda(w, x.t())):
            with pytest.raises(RuntimeError, match="built without CUDA"):
                call()
        return
    with pytest.raises(ValueError, match="CUDA torch tensor"):
        _cuda.linear_cuda(x, w)
    with pytest.raises(ValueError, match="CUDA torch tensor"):
        _cuda.spmm_cuda(w, x.t())
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA device"):
            _cuda.device_weight(w, "cuda")
    with pytest.raises(ValueError, match="must be a CUDA array"):
        frag, words = _pack(w.values, w.indices, 64, 128, 64, 128)
        _C.cuda_hinm_spmm(frag, words, None, None, None, 64, 128, 64, 128, x.t().contiguous(), 8,
                          torch.empty(64, 8).half(), False, 0)


def test_cuda_path_rejects_other_patterns():
    w = hinm.compress_nm(torch.randn(16, 32).half(), 2, 8)
    with pytest.raises(ValueError, match="2:4"):
        _cuda._canonical(w)


def test_index_checks_guard_the_kernel():
    from types import SimpleNamespace

    cfg = hinm.HiNMConfig(v=32, vec_density=0.5)
    base = dict(values=torch.zeros(32, 16).half(), indices=torch.zeros(32, 16, dtype=torch.uint8),
                shape=(32, 64), config=cfg)
    good = _cuda._canonical(SimpleNamespace(col_idx=torch.arange(32).reshape(1, 32), row_perm=None, **base))
    assert _cuda._checked_indices(good)[0].dtype == torch.int32
    bad_col = _cuda._canonical(SimpleNamespace(col_idx=torch.full((1, 32), 64), row_perm=None, **base))
    with pytest.raises(ValueError, match="col_idx"):
        _cuda._checked_indices(bad_col)
    bad_shape = _cuda._canonical(SimpleNamespace(col_idx=torch.zeros(2, 32), row_perm=None, **base))
    with pytest.raises(ValueError, match="col_idx must have shape"):
        _cuda._checked_indices(bad_shape)
    bad_perm = _cuda._canonical(SimpleNamespace(col_idx=torch.arange(32).reshape(1, 32),
                                                row_perm=torch.arange(32) + 1, **base))
    with pytest.raises(ValueError, match="row_perm"):
        _cuda._checked_indices(bad_perm)


def _decode_device_layout(frag, words, rows, cols, v, kept, col_idx, row_perm):
    """Dense [R, K] rebuilt from the device-ready layout with the PTX fragment and metadata rules
    (sptc-metadata.md 1.5), written independently of the C++ converter."""
    ks = words.shape[1] // 32
    f = frag.float().numpy().reshape(-1, ks, 32, 8)
    wd = words.numpy().reshape(-1, ks, 32).astype(np.int64)
    dense = np.zeros((rows, cols), np.float32)
    s = np.arange(rows)[:, None]  # slot rows (padding slots are never read back)
    q = np.arange(kept // 4)[None, :]  # 4-column chunks of the kept columns
    kk, qq = q // 8, q % 8
    ii = s % 32
    lane = 4 * (ii % 8) + 2 * (ii // 16) + qq // 4
    code = (wd[s // 32, kk, lane] >> (16 * ((ii // 8) % 2) + 4 * (qq % 4))) & 0xF
    perm = np.arange(rows) if row_perm is None else np.asarray(row_perm)
    tile_cols = np.arange(cols)[None, :].repeat(-(-rows // v), 0) if col_idx is None else np.asarray(col_idx)
    for which, pos in ((0, code & 3), (1, code >> 2)):
        cc = 2 * qq + which  # compressed column inside the 16-wide slice
        val = f[s // 16, kk, 4 * (s % 8) + (cc % 8) // 2, 4 * (cc // 8) + 2 * ((s % 16) // 8) + cc % 2]
        col = tile_cols[(s // v), 4 * q + pos]
        dense[np.broadcast_to(perm[s], col.shape), col] = val
    return dense


@pytest.mark.parametrize("config", ["hinm:v32:0.5:2:4", "hinm:v64:0.25:2:4", "2:4"])
def test_device_layout_of_a_compressed_weight_decodes_to_the_dense_weight(config):
    rng = np.random.default_rng(5)
    rows, cols = 150, 200
    weight = torch.from_numpy(rng.standard_normal((rows, cols)).astype(np.float32)).half()
    perm = None
    if config.startswith("hinm"):
        tiles = -(-rows // hinm.parse_config(config).v)
        perm = {"row_perm": rng.permutation(rows), "col_orders": np.stack([rng.permutation(cols) for _ in range(tiles)])}
    w = hinm.compress(weight, config, perm=perm)
    c = _cuda._canonical(w)
    col_idx, row_perm = _cuda._checked_indices(c)
    frag, words = _pack(_cuda._as_torch_cpu(c.values), _cuda._as_torch_cpu(c.positions), c.rows, c.cols, c.v, c.kept)
    got = _decode_device_layout(frag, words, c.rows, c.cols, c.v, c.kept, col_idx, row_perm)
    np.testing.assert_array_equal(got, w.to_dense().float().numpy())


@pytest.mark.skipif(hinm.cuda_available() and torch.cuda.is_available(), reason="would run the full GPU benchmark")
def test_gpu_benchmark_exits_cleanly_without_a_gpu():
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[2] / "bench" / "bench_gpu.py"
    res = subprocess.run([sys.executable, str(script), "--quick"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "nothing to do" in res.stdout


def test_overlap_check_of_the_cuda_path():
    # the GPU spmm refuses an out= overlapping b with this test (tests/gpu exercises the call)
    t = torch.zeros(8, 6)
    assert _cuda._overlap(t[:4], t[3:])
    assert not _cuda._overlap(t[:4], t[4:])
    assert _cuda._overlap(t[:, :2], t[:, 4:])  # interleaved: conservative
    assert _cuda._overlap(t[2:3], t.t()[1:2])  # a column crossing a row
    assert not _cuda._overlap(t[:0], t)
