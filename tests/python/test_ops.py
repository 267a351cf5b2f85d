"""hinm.linear / hinm.spmm against a float64 numpy reference: N:M and HiNM weights, every
pattern, tile height, dtype and permutation, every CPU kernel variant, out=/accumulate, torch and
numpy inputs, thread-count independence and bad inputs."""

from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

import hinm
from hinm import _C, ops
from conftest import HAS_TORCH, needs_torch

PATTERNS = [(1, 2), (2, 4), (1, 4), (2, 8), (4, 8), (1, 8)]
VARIANTS = ["", "generic"]  # the machine's best kernels, and the portable ones


@dataclass(eq=False)
class RawHiNM:
    """The HiNM container arrays (the layout of cpp/include/hinm/hinm_format.hpp)."""
    values: Any
    indices: Any
    col_idx: Any
    row_perm: Any
    shape: tuple
    v: int
    n: int
    m: int


def make_hinm(rng, r, k, v, n, m, kept, dtype="float32", permute=True):
    """A random HiNM weight and its dense float64 equivalent."""
    t = -(-r // v)
    cols = np.stack([rng.permutation(k)[:kept] if permute else np.arange(kept) for _ in range(t)]).astype(np.int32)
    perm = rng.permutation(r).astype(np.int64) if permute else np.arange(r, dtype=np.int64)
    src = rng.standard_normal((t * v, kept)).astype(np.float32)
    if dtype == "int8":
        src = np.round(src * 20).astype(np.int8)
    elif dtype == "float16":
        src = src.astype(np.float16)
    if dtype == "bfloat16":
        import torch

        nm = hinm.compress_nm(torch.from_numpy(src).to(torch.bfloat16), n, m)
        values, exact = nm.values, nm.values.float().numpy().astype(np.float64)
        indices = nm.indices.numpy()
    else:
        nm = hinm.compress_nm(src, n, m)
        values, indices, exact = nm.values, nm.indices, nm.values.astype(np.float64)
    dense = np.zeros((r, k))
    kc = kept // m * n
    j = np.arange(kc)
    for s in range(r):
        local = j // n * m + indices[s, :]
        dense[perm[s], cols[s // v, local]] = exact[s]
    return RawHiNM(values, indices, cols, perm, (r, k), v, n, m), dense


@pytest.fixture(params=VARIANTS, ids=["best", "generic"])
def variant(request):
    _C.spmm_force_isa(request.param)
    yield request.param
    _C.spmm_force_isa("")


def check_close(got, ref, dense, x):
    scale = np.abs(x) @ np.abs(dense).T + 1e-3
    err = np.max(np.abs(np.asarray(got, np.float64) - ref) / scale)
    assert err < 2e-6, err


@pytest.mark.parametrize("n,m", PATTERNS)
@pytest.mark.parametrize("v", [32, 64, 128])
def test_hinm_linear_and_spmm_match_reference(rng, variant, n, m, v):
    r = v + 7  # R not a multiple of v: the last tile is padded
    k = m * 10
    w, dense = make_hinm(rng, r, k, v, n, m, kept=m * 6, permute=v != 64)
    for batch in (1, 3, 17, 33):
        x = rng.standard_normal((batch, k)).astype(np.float32)
        check_close(hinm.linear(x, w), x.astype(np.float64) @ dense.T, dense, x)
        b = np.ascontiguousarray(x.T)
        check_close(hinm.spmm(w, b).T, x.astype(np.float64) @ dense.T, dense, x)


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16", "int8"])
def test_every_value_dtype(rng, variant, dtype):
    if dtype == "bfloat16":
        pytest.importorskip("torch")
    w, dense = make_hinm(rng, 100, 96, 32, 2, 4, kept=48, dtype=dtype)
    for batch in (1, 5, 40):
        x = rng.standard_normal((batch, 96)).astype(np.float32)
        check_close(hinm.linear(x, w), x.astype(np.float64) @ dense.T, dense, x)


def test_nm_tensor_with_leading_dims_bias_out_and_accumulate(rng, variant):
    wd = rng.standard_normal((70, 64)).astype(np.float32)
    t = hinm.compress_nm(wd, 2, 4)
    dense = t.to_dense().astype(np.float64)
    bias = rng.standard_normal(70).astype(np.float32)
    x = rng.standard_normal((2, 3, 64)).astype(np.float32)
    ref = x.astype(np.float64) @ dense.T + bias
    y = hinm.linear(x, t, bias)
    assert y.shape == (2, 3, 70) and isinstance(y, np.ndarray)
    check_close(y.reshape(6, 70), ref.reshape(6, 70), dense, x.reshape(6, 64))
    out = np.ones((2, 3, 70), np.float32)
    assert hinm.linear(x, t, bias, out=out, accumulate=True) is out
    check_close(out.reshape(6, 70), ref.reshape(6, 70) + 1, dense, x.reshape(6, 64))
    b = rng.standard_normal((64, 20)).astype(np.float32)
    out2 = np.full((70, 20), 2.0, np.float32)
    hinm.spmm(t, b, out=out2, accumulate=True)
    check_close(out2.T, (dense @ b).T + 2, dense, b.T)


@needs_torch
def test_torch_in_torch_out_without_copies(rng):
    import torch

    w, dense = make_hinm(rng, 64, 64, 32, 2, 4, kept=32)
    tw = RawHiNM(*(torch.from_numpy(a.copy()) if isinstance(a, np.ndarray) else a for a in
                   (w.values, w.indices, w.col_idx, w.row_perm)), w.shape, w.v, w.n, w.m)
    x = torch.randn(4, 5, 64)
    y = hinm.linear(x, tw)
    assert isinstance(y, torch.Tensor) and y.shape == (4, 5, 64)
    check_close(y.reshape(20, 64).numpy(), x.reshape(20, 64).double().numpy() @ dense.T, dense,
                x.reshape(20, 64).numpy())
    out = torch.empty(64, 8)
    b = torch.randn(64, 8)
    assert hinm.spmm(tw, b, out=out) is out
    check_close(out.T.numpy(), (dense @ b.double().numpy()).T, dense, b.T.numpy())


def test_results_do_not_depend_on_thread_count(rng):
    w, _ = make_hinm(rng, 300, 128, 64, 2, 4, kept=64)
    nm = hinm.compress_nm(rng.standard_normal((200, 96)).astype(np.float32), 1, 4)
    for weight, k in ((w, 128), (nm, 96)):
        for batch in (1, 7, 50):
            assert_thread_independent(weight, rng.standard_normal((batch, k)).astype(np.float32))


def assert_thread_independent(weight, x):
    """hinm.linear(x, weight) is bit-identical on 1 and 2 threads."""
    try:
        hinm.set_num_threads(1)
        one = hinm.linear(x, weight)
        hinm.set_num_threads(2)
        two = hinm.linear(x, weight)
    finally:
        hinm.set_num_threads(0)
    assert np.array_equal(one, two)


def test_bad_inputs_raise_clear_errors(rng, monkeypatch):
    t = hinm.compress_nm(rng.standard_normal((16, 32)).astype(np.float32), 2, 4)
    x = rng.standard_normal((3, 32)).astype(np.float32)
    with pytest.raises(TypeError, match="x must be float32"):
        hinm.linear(x.astype(np.float64), t)
    with pytest.raises(ValueError, match=r"x must have shape \[\.\.\., 32\]"):
        hinm.linear(x[:, :28].copy(), t)
    with pytest.raises(ValueError, match="contiguous"):
        hinm.linear(np.zeros((2, 3, 64), np.float32)[:, :, ::2], t)
    with pytest.raises(ValueError, match="contiguous last axis"):
        hinm.linear(np.zeros((3, 64), np.float32)[:, ::2], t)
    with pytest.raises(ValueError, match="out must have shape"):
        hinm.linear(x, t, out=np.zeros((3, 15), np.float32))
    with pytest.raises(TypeError, match="out must be float32"):
        hinm.linear(x, t, out=np.zeros((3, 16), np.float64))
    with pytest.raises(ValueError, match="out must be contiguous"):
        hinm.linear(x, t, out=np.zeros((16, 3), np.float32).T)
    read_only = np.zeros((2, 3, 16), np.float32)
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match="out is a read-only array"):
        hinm.linear(x, t, out=read_only[0])
    with pytest.raises(ValueError, match="out is a read-only array"):
        hinm.spmm(t, x.T.copy(), out=read_only[1].reshape(16, 3))
    shared = np.zeros(3 * 32 + 16, np.float32)  # the kernels read x / b / bias while writing out
    with pytest.raises(ValueError, match="out overlaps x"):
        hinm.linear(shared[:96].reshape(3, 32), t, out=shared[48:96].reshape(3, 16))
    with pytest.raises(ValueError, match="out overlaps bias"):
        hinm.linear(x, t, shared[:16], out=shared[:48].reshape(3, 16))
    with pytest.raises(ValueError, match="out overlaps b"):
        hinm.spmm(t, shared[:96].reshape(32, 3), out=shared[:48].reshape(16, 3))
    if HAS_TORCH:
        import torch
        with pytest.raises(ValueError, match="out overlaps x"):
            hinm.linear(torch.from_numpy(shared[:96].reshape(3, 32)), t, out=torch.from_numpy(shared[:48].reshape(3, 16)))
    with pytest.raises(ValueError, match="accumulate"):
        hinm.linear(x, t, accumulate=True)
    with pytest.raises(ValueError, match="bias must have shape"):
        hinm.linear(x, t, np.zeros(15, np.float32))
    with pytest.raises(ValueError, match=r"b must have shape \(32, N\)"):
        hinm.spmm(t, x)
    with pytest.raises(TypeError, match="NMTensor or a HiNM tensor"):
        hinm.linear(x, np.zeros((16, 32), np.float32))
    w, _ = make_hinm(rng, 64, 64, 32, 2, 4, kept=32)
    w.row_perm = np.zeros(64, np.int64)
    with pytest.raises(ValueError, match="row_perm is not a permutation"):
        hinm.linear(rng.standard_normal((2, 64)).astype(np.float32), w)
    with pytest.raises(ValueError, match="unknown variant"):
        _C.spmm_force_isa("sse9")
    if not hinm.built_with_cuda():
        monkeypatch.setattr(ops, "is_cuda", lambda a: True)
        with pytest.raises(RuntimeError, match="built without CUDA"):
            hinm.linear(x, t)
        with pytest.raises(RuntimeError, match="built without CUDA"):
            hinm.spmm(t, x.T.copy())


def test_masks_are_built_once_per_weight(rng):
    t = hinm.compress_nm(rng.standard_normal((16, 32)).astype(np.float32), 1, 8)
    x = rng.standard_normal((1, 32)).astype(np.float32)
    hinm.linear(x, t)
    first = ops._MASKS[t][3]
    assert first is not None
    hinm.linear(x, t)
    assert ops._MASKS[t][3] is first


@pytest.mark.parametrize("config", ["hinm:v32:0.5:2:4", "hinm:v64:0.25:1:4", "hinm:v128:0.5:4:8", "2:4"])
def test_compressed_tensors_match_their_dense_form(rng, config):
    w = rng.standard_normal((150, 128)).astype(np.float32)
    t = hinm.compress(w, config)
    dense = np.asarray(t.to_dense(), np.float64)
    bias = rng.standard_normal(150).astype(np.float32)
    for batch in (1, 6, 40):
        x = rng.standard_normal((batch, 128)).astype(np.float32)
        check_close(hinm.linear(x, t, bias), x.astype(np.float64) @ dense.T + bias, dense, x)
        check_close(hinm.spmm(t, np.ascontiguousarray(x.T)).T, x.astype(np.float64) @ dense.T, dense, x)
