"""The CUDA HiNM / 2:4 SpMM against torch dense matmul, on a GPU. Skipped cleanly without one.

Run: python -m pytest tests/gpu -q"""

from types import SimpleNamespace

import numpy as np
import pytest

import hinm
from hinm import _cuda

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.skipif(not (hinm.cuda_available() and torch.cuda.is_available()),
                                reason="no CUDA device (or hinm / torch built without CUDA)")


class HiNMStandIn(SimpleNamespace):
    """The canonical HiNM fields (weak-referenceable, so the device layout can be cached on it)."""


def random_hinm(rows, cols, v, vec_density, dtype, permute, seed):
    """A random 2:4 HiNM weight in the canonical container and its dense [R, K] matrix (float64)."""
    rng = np.random.default_rng(seed)
    cfg = hinm.HiNMConfig(v=v, vec_density=vec_density)
    kept = cfg.kept_columns(cols)
    tiles = -(-rows // v)
    slots = tiles * v
    col_idx = np.stack([rng.permutation(cols)[:kept] for _ in range(tiles)]).astype(np.int32)
    if not permute:
        col_idx.sort(axis=1)
    row_perm = rng.permutation(rows) if permute else np.arange(rows)
    pairs = np.array([[0, 1], [0, 2], [0, 3], [1, 2], [1, 3], [2, 3]], np.uint8)
    pos = pairs[rng.integers(0, 6, (slots, kept // 4))].reshape(slots, kept // 2)
    vals = torch.randn(slots, kept // 2, dtype=torch.float32).to(dtype)
    vals[rows:] = 0
    dense = np.zeros((rows, cols))
    vf = vals.double().numpy()
    for s in range(rows):
        t = s // v
        j = (np.arange(kept // 2) // 2) * 4 + pos[s]
        dense[row_perm[s], col_idx[t, j]] = vf[s]
    w = HiNMStandIn(values=vals, indices=torch.from_numpy(pos), col_idx=torch.from_numpy(col_idx),
                        row_perm=torch.from_numpy(row_perm) if permute else None, shape=(rows, cols), config=cfg)
    if not permute:
        w.row_perm = None
    return w, torch.from_numpy(dense)


def rel_err(got, ref):
    return float(torch.linalg.norm(got.double().cpu() - ref) / torch.linalg.norm(ref))


TOL = {torch.float16: 1e-3, torch.bfloat16: 8e-3}


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("v", [32, 64, 96, 128])
@pytest.mark.parametrize("vec_density", [0.5, 0.25])  # 75% and 87.5% sparsity
@pytest.mark.parametrize("permute", [False, True])
def test_hinm_spmm_matches_dense(dtype, v, vec_density, permute):
    for rows, cols, n in ((256, 512, 1), (200, 320, 37), (384, 768, 129), (130, 1000, 300)):
        w, dense = random_hinm(rows, cols, v, vec_density, dtype, permute, seed=rows + n)
        x = torch.randn(cols, n, device="cuda").to(dtype)
        bias = torch.randn(rows, device="cuda").to(dtype)
        y = _cuda.spmm_cuda(w, x, bias=bias)
        torch.cuda.synchronize()
        ref = dense @ x.double().cpu() + bias.double().cpu()[:, None]
        assert rel_err(y, ref) <= TOL[dtype], (rows, cols, n)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_linear_with_out_and_batch_dims(dtype):
    w, dense = random_hinm(192, 256, 64, 0.5, dtype, True, seed=5)
    x = torch.randn(3, 7, 256, device="cuda").to(dtype)
    out = torch.empty(3, 7, 192, device="cuda", dtype=dtype)
    y = _cuda.linear_cuda(x, w, bias=None, out=out)
    assert y is out
    ref = x.double().cpu().reshape(-1, 256) @ dense.t()
    assert rel_err(out.reshape(-1, 192), ref) <= TOL[dtype]


@pytest.mark.parametrize("rows,cols,n", [(64, 64, 8), (100, 200, 33), (1000, 1024, 515)])
def test_plain_2_4_matches_dense(rows, cols, n):
    weight = torch.randn(rows, cols).half()
    w = hinm.compress_nm(weight, 2, 4)
    dense = w.to_dense().double()
    x = torch.randn(cols, n, device="cuda").half()
    y = _cuda.spmm_cuda(w, x)
    assert rel_err(y, dense @ x.double().cpu()) <= 1e-3


def test_strided_input_and_output_and_stream():
    w, dense = random_hinm(128, 256, 128, 0.5, torch.float16, True, seed=9)
    big = torch.randn(256, 50, device="cuda").half()
    x = big[:, 3:40]  # unaligned, strided: copied into a padded buffer
    out = torch.empty(40, 128, device="cuda").half().t()  # non-contiguous rows
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        _cuda.spmm_cuda(w, x, out=out[:, :37])
    s.synchronize()
    assert rel_err(out[:, :37], dense @ x.double().cpu()) <= 1e-3


def test_device_layout_is_cached():
    w, _ = random_hinm(64, 128, 64, 0.5, torch.float16, False, seed=1)
    a = _cuda.device_weight(w, "cuda")
    assert _cuda.device_weight(w, torch.device("cuda", torch.cuda.current_device())) is a


def test_accumulate_adds_into_out():
    w, dense = random_hinm(128, 256, 64, 0.5, torch.float16, True, seed=3)
    x = torch.randn(256, 40, device="cuda").half()
    out = torch.randn(128, 40, device="cuda").half()
    ref = dense @ x.double().cpu() + out.double().cpu()
    assert _cuda.spmm_cuda(w, x, out=out, accumulate=True) is out
    assert rel_err(out, ref) <= 1e-3
    xl = torch.randn(5, 256, device="cuda").half()
    outl = torch.randn(5, 128, device="cuda").half()
    refl = xl.double().cpu() @ dense.t() + outl.double().cpu()
    _cuda.linear_cuda(xl, w, out=outl, accumulate=True)
    assert rel_err(outl, refl) <= 1e-3
    with pytest.raises(ValueError, match="accumulate"):
        _cuda.spmm_cuda(w, x, accumulate=True)


def test_float32_weight_values_run_in_the_activation_dtype():
    w, dense = random_hinm(64, 128, 64, 0.5, torch.float16, False, seed=4)
    w.values = w.values.float()
    for dtype in (torch.float16, torch.bfloat16):
        x = torch.randn(128, 16, device="cuda").to(dtype)
        y = _cuda.spmm_cuda(w, x)
        assert y.dtype == dtype
        assert rel_err(y, dense @ x.double().cpu()) <= TOL[dtype]
    with pytest.raises(TypeError, match="float16 or bfloat16"):
        _cuda.spmm_cuda(w, torch.randn(128, 16, device="cuda"))


@pytest.mark.parametrize("config", ["hinm:v64:0.5:2:4", "hinm:v128:0.25:2:4", "2:4"])
def test_public_ops_dispatch_cuda_tensors(config):
    rng = np.random.default_rng(2)
    weight = torch.randn(192, 256).half()
    perm = None
    if config.startswith("hinm"):
        tiles = -(-192 // hinm.parse_config(config).v)
        perm = {"row_perm": rng.permutation(192), "col_orders": np.stack([rng.permutation(256) for _ in range(tiles)])}
    w = hinm.compress(weight, config, perm=perm)
    dense = w.to_dense().double()
    x = torch.randn(9, 256, device="cuda").half()
    bias = torch.randn(192, device="cuda").half()
    y = hinm.linear(x, w, bias=bias)
    assert y.device.type == "cuda" and y.dtype == torch.float16
    assert rel_err(y, x.double().cpu() @ dense.t() + bias.double().cpu()) <= 1e-3
    b = torch.randn(256, 33, device="cuda").half()
    assert rel_err(hinm.spmm(w, b), dense @ b.double().cpu()) <= 1e-3


def test_device_layout_follows_edits_in_place():
    w, _ = random_hinm(64, 128, 64, 0.5, torch.float16, False, seed=2)
    a = _cuda.device_weight(w, "cuda")
    w.values.mul_(2)  # the version counter moves: the cached layout is stale
    b = _cuda.device_weight(w, "cuda")
    assert b is not a and torch.equal(b.frag_values, a.frag_values * 2)
    assert _cuda.device_weight(w, "cuda") is b


def test_out_overlapping_b_is_refused():
    w, _ = random_hinm(64, 128, 64, 0.5, torch.float16, False, seed=2)
    buf = torch.randn(128, 8, device="cuda").half()
    with pytest.raises(ValueError, match="out overlaps b"):
        _cuda.spmm_cuda(w, buf, out=buf[:64])
