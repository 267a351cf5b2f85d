"""CUDA HiNM / 2:4 SpMM on sparse tensor cores (mma.sp): the GPU branch of ``hinm.spmm`` and
``hinm.linear``. Imports everywhere; the functions raise ``RuntimeError("hinm was built without
CUDA")`` in CPU-only builds.

The weight (a 2:4 ``NMTensor`` or a 2:4 HiNM tensor with float16/bfloat16 values) is converted
once per device into the kernel's device-ready layout (fragment-ordered values + lane words, see
cpp/include/hinm/cuda_layout.hpp) by the C++ core on the CPU, moved with ``.to(device)`` and
cached on the weight object while its arrays are unchanged (torch version counters, read-only
numpy arrays; writeable numpy arrays are converted again at every call). The kernel runs on
torch's current stream."""

from __future__ import annotations

import logging
import threading
import weakref
from dataclasses import dataclass
from typing import Any, Optional

from . import _C
from ._arrays import edit_token, numpy_to_torch

log = logging.getLogger("hinm")

CUDA_DTYPES = ("float16", "bfloat16")

_cache_lock = threading.Lock()
_cache: "weakref.WeakKeyDictionary[Any, dict]" = weakref.WeakKeyDictionary()
_warned_uncached = False


@dataclass(frozen=True)
class _Canonical:
    """The canonical container fields the CUDA path reads (duck-typed over NMTensor / HiNMTensor)."""

    values: Any
    positions: Any
    rows: int
    cols: int
    v: int
    kept: int
    col_idx: Any  # [T, Kt] or None (identity)
    row_perm: Any  # [R] or None (identity)


@dataclass(frozen=True)
class DeviceWeight:
    """A weight in the CUDA kernel's device-ready layout, on one device."""

    frag_values: Any
    lane_words: Any
    col_idx: Any
    row_perm: Any
    rows: int
    cols: int
    v: int
    kept: int
    dtype: str


def _require_cuda_build() -> None:
    if not _C.built_with_cuda():
        raise RuntimeError("hinm was built without CUDA")


def _torch():
    import torch

    return torch


def _as_torch_cpu(a: Any) -> Any:
    torch = _torch()
    if isinstance(a, torch.Tensor):
        return a.detach().to("cpu").contiguous()
    return numpy_to_torch(a)


def _pattern(w: Any) -> tuple:
    cfg = getattr(w, "config", None)
    n = getattr(w, "n", None)
    m = getattr(w, "m", None)
    if n is None and cfg is not None:
        n, m = getattr(cfg, "n", None), getattr(cfg, "m", None)
    return n, m


def _canonical(w: Any) -> _Canonical:
    """Reads a 2:4 weight container: NMTensor (plain 2:4) or a HiNM tensor (values, indices or
    positions, col_idx, row_perm, config.v)."""
    n, m = _pattern(w)
    if (n, m) != (2, 4):
        raise ValueError(f"the CUDA kernel runs 2:4 weights only, got {n}:{m}")
    values = w.values
    positions = getattr(w, "indices", None)
    if positions is None:
        positions = getattr(w, "positions")
    rows, cols = (int(s) for s in w.shape)
    col_idx = getattr(w, "col_idx", None)
    row_perm = getattr(w, "row_perm", None)
    cfg = getattr(w, "config", None)
    v = getattr(w, "v", None) or getattr(cfg, "v", None)
    if col_idx is None and row_perm is None and v is None:  # plain N:M: one tile of all rows
        v = max(rows, 1)
    kept = int(values.shape[1]) * 2
    return _Canonical(values, positions, rows, cols, int(v), kept, col_idx, row_perm)


def _edit_state(w: Any) -> Optional[tuple]:
    """w's arrays and their edit tokens (see _arrays.edit_token), or None when an edit in place
    of one of them could not be seen (the device layout must then not be kept)."""
    arrays = tuple(getattr(w, name, None) for name in ("values", "indices", "positions", "col_idx", "row_perm"))
    tokens = tuple(() if a is None else edit_token(a) for a in arrays)
    return None if None in tokens else (arrays, tokens)


def _unchanged(state: Optional[tuple], now: Optional[tuple]) -> bool:
    return state is not None and now is not None and state[1] == now[1] and \
        all(a is b for a, b in zip(state[0], now[0]))


def _warn_uncached(w: Any) -> None:
    global _warned_uncached
    if not _warned_uncached:
        _warned_uncached = True
        log.warning("hinm: a %s with writeable numpy arrays: its device layout is rebuilt at every call (edits "
                    "in place could not be seen); use torch tensors or read-only arrays", type(w).__name__)


def _checked_indices(c: _Canonical) -> tuple:
    """col_idx (int32 [T, Kt]) and row_perm (int64 [R]) on the CPU, range-checked: the kernel
    gathers and scatters through them without bounds checks."""
    torch = _torch()
    tiles = -(-c.rows // c.v)
    col_idx = row_perm = None
    if c.col_idx is not None:
        col_idx = _as_torch_cpu(c.col_idx).to(torch.int64)
        if tuple(col_idx.shape) != (tiles, c.kept):
            raise ValueError(f"col_idx must have shape {(tiles, c.kept)}, got {tuple(col_idx.shape)}")
        if col_idx.numel() and (int(col_idx.min()) < 0 or int(col_idx.max()) >= c.cols):
            raise ValueError(f"col_idx holds a column outside [0, {c.cols})")
        col_idx = col_idx.to(torch.int32).contiguous()
    elif c.kept != c.cols:
        raise ValueError(f"a weight without col_idx must keep every column (kept={c.kept}, K={c.cols})")
    if c.row_perm is not None:
        row_perm = _as_torch_cpu(c.row_perm).to(torch.int64).reshape(-1).contiguous()
        if row_perm.numel() != c.rows or (c.rows and (int(row_perm.min()) < 0 or int(row_perm.max()) >= c.rows)):
            raise ValueError(f"row_perm must hold {c.rows} rows in [0, {c.rows})")
    return col_idx, row_perm


def _dtype_name(t: Any) -> str:
    return str(t.dtype).removeprefix("torch.")


def device_weight(w: Any, device: Any, dtype: Optional[str] = None) -> DeviceWeight:
    """The device-ready layout of weight `w` on `device` (built once per device and dtype, then
    cached on `w`). dtype: 'float16' or 'bfloat16' to cast the values to (default: their own)."""
    _require_cuda_build()
    torch = _torch()
    device = torch.device(device)
    if device.type != "cuda":
        raise ValueError(f"device must be a CUDA device, got {device}")
    if not torch.cuda.is_available():
        raise RuntimeError("no CUDA device is available (or torch was built without CUDA)")
    if device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    if dtype is not None and dtype not in CUDA_DTYPES:
        raise TypeError(f"the CUDA kernel runs float16 or bfloat16, got {dtype}")
    key = (device, dtype)
    state = _edit_state(w)
    with _cache_lock:
        hit = (_cache.get(w) or {}).get(key)
    if hit is not None and _unchanged(hit[0], state):
        return hit[1]
    c = _canonical(w)
    values = _as_torch_cpu(c.values)
    if dtype is not None and _dtype_name(values) != dtype:
        if _dtype_name(values) not in ("float32", "float16", "bfloat16"):
            raise TypeError(f"cannot run {_dtype_name(values)} weight values on the CUDA kernel")
        values = values.to(getattr(torch, dtype))
    dt = _dtype_name(values)
    if dt not in CUDA_DTYPES:
        raise TypeError(f"the CUDA kernel needs float16 or bfloat16 weight values, got {dt}")
    positions = _as_torch_cpu(c.positions)
    slots = -(-c.rows // c.v) * c.v
    fr, fc, lr, lc = _C.cuda_layout_shape(slots, c.kept)
    frag = torch.empty((fr, fc), dtype=values.dtype)
    words = torch.empty((lr, lc), dtype=torch.uint32)
    _C.cuda_pack_layout(values, positions, c.rows, c.cols, c.v, c.kept, frag, words)
    col_idx, row_perm = _checked_indices(c)
    col_idx = None if col_idx is None else col_idx.to(device)
    row_perm = None if row_perm is None else row_perm.to(device)
    dw = DeviceWeight(frag.to(device), words.to(device), col_idx, row_perm, c.rows, c.cols, c.v, c.kept, dt)
    log.debug("hinm: device layout for %s on %s (%d x %d, v=%d, kept=%d, %s)", type(w).__name__, device, c.rows,
              c.cols, c.v, c.kept, dt)
    if state is None:
        _warn_uncached(w)
        return dw
    try:
        with _cache_lock:
            _cache.setdefault(w, {})[key] = (state, dw)
    except TypeError:  # not weak-referenceable: no caching
        pass
    return dw


def _activation_dtype(x: Any, name: str) -> str:
    torch = _torch()
    if not isinstance(x, torch.Tensor) or x.device.type != "cuda":
        raise ValueError(f"{name} must be a CUDA torch tensor")
    dt = _dtype_name(x)
    if dt not in CUDA_DTYPES:
        raise TypeError(f"{name}: the CUDA kernel runs float16 or bfloat16 activations, got {dt}")
    return dt


def _launch(dw: DeviceWeight, xk: Any, n: int, y: Any, bias: Optional[Any], accumulate: bool) -> None:
    torch = _torch()
    with torch.cuda.device(xk.device):
        stream = torch.cuda.current_stream(xk.device).cuda_stream
        _C.cuda_hinm_spmm(dw.frag_values, dw.lane_words, dw.col_idx, dw.row_perm, bias, dw.rows, dw.cols, dw.v,
                          dw.kept, xk, n, y, bool(accumulate), int(stream))


def _kernel_input(b: Any) -> Any:
    """b [K, N] as the kernel reads it: row stride a multiple of 8 (>= roundup(N, 8)), 16-byte
    aligned. Returned as is when it already qualifies, else copied into a padded buffer."""
    torch = _torch()
    k, n = (int(s) for s in b.shape)
    n8 = -(-n // 8) * 8
    ok = (b.stride(1) == 1 or n <= 1) and b.stride(0) % 8 == 0 and b.stride(0) >= n8 and b.data_ptr() % 16 == 0
    if ok and k > 0 and b.untyped_storage().nbytes() >= (b.storage_offset() + (k - 1) * b.stride(0) + n8) * 2:
        return b
    buf = torch.empty((k, max(n8, 8)), dtype=b.dtype, device=b.device)
    buf[:, :n].copy_(b)
    return buf


def _bias(bias: Optional[Any], dw: DeviceWeight, device: Any) -> Optional[Any]:
    if bias is None:
        return None
    torch = _torch()
    bias = torch.as_tensor(bias, device=device)
    if tuple(bias.shape) != (dw.rows,):
        raise ValueError(f"bias must have shape ({dw.rows},), got {tuple(bias.shape)}")
    return bias.detach().to(getattr(torch, dw.dtype)).contiguous()


def _check_out(out: Optional[Any], shape: tuple, dtype: str, device: Any, accumulate: bool) -> None:
    if out is None:
        if accumulate:
            raise ValueError("accumulate=True needs an out= buffer to add into")
        return
    torch = _torch()
    if (not isinstance(out, torch.Tensor) or tuple(out.shape) != shape or _dtype_name(out) != dtype
            or out.device != device):
        raise ValueError(f"out must be a {dtype} tensor of shape {shape} on {device}")


def _overlap(a: Any, b: Any) -> bool:
    """Whether two tensors' reachable memory ranges intersect (any device; conservative)."""
    def bounds(t):  # torch strides are never negative
        reach = sum((n - 1) * st for n, st in zip(t.shape, t.stride()))
        return t.data_ptr(), t.data_ptr() + (reach + 1) * t.element_size()

    if a.numel() == 0 or b.numel() == 0:
        return False
    (a0, a1), (b0, b1) = bounds(a), bounds(b)
    return a0 < b1 and b0 < a1


def spmm_cuda(w: Any, b: Any, out: Optional[Any] = None, accumulate: bool = False,
              bias: Optional[Any] = None) -> Any:
    """W @ B (+ bias[:, None]) on the GPU. b: CUDA tensor [K, N], float16 or bfloat16 (the weight's
    values are cast to it once, cached); returns (or fills `out`, adding to it with
    accumulate=True) [R, N]. Accumulation in float32."""
    _require_cuda_build()
    torch = _torch()
    dt = _activation_dtype(b, "b")
    dw = device_weight(w, b.device, dt)
    if b.dim() != 2 or int(b.shape[0]) != dw.cols:
        raise ValueError(f"b must have shape ({dw.cols}, N), got {tuple(b.shape)}")
    n = int(b.shape[1])
    _check_out(out, (dw.rows, n), dt, b.device, accumulate)
    if out is not None and _overlap(out, b):  # the kernel reads b while writing out
        raise ValueError("out overlaps b in memory; pass a separate out= buffer")
    with torch.no_grad():
        b = b.detach()
        bias_t = _bias(bias, dw, b.device)
        if out is None:
            y = torch.empty((dw.rows, n), dtype=b.dtype, device=b.device)
        elif out.stride(1) == 1 or n <= 1:
            y = out.detach()
        else:
            y = out.detach().contiguous() if accumulate else torch.empty_like(out, memory_format=torch.contiguous_format)
        _launch(dw, _kernel_input(b), n, y, bias_t, accumulate)
        if out is not None and y.data_ptr() != out.data_ptr():
            out.copy_(y)
    return out if out is not None else y


def linear_cuda(x: Any, w: Any, bias: Optional[Any] = None, out: Optional[Any] = None,
                accumulate: bool = False) -> Any:
    """x Wᵀ + bias on the GPU for x [..., K] (CUDA, float16/bfloat16) -> [..., R]; `out` /
    `accumulate` as in spmm_cuda. The kernel computes W xᵀ: x is transposed into a padded [K, M]
    buffer and the result transposed back."""
    _require_cuda_build()
    torch = _torch()
    dt = _activation_dtype(x, "x")
    dw = device_weight(w, x.device, dt)
    if x.dim() < 1 or int(x.shape[-1]) != dw.cols:
        raise ValueError(f"x must have shape (..., {dw.cols}), got {tuple(x.shape)}")
    lead = tuple(x.shape[:-1])
    _check_out(out, lead + (dw.rows,), dt, x.device, accumulate)
    with torch.no_grad():
        x2 = x.detach().reshape(-1, dw.cols)
        m = int(x2.shape[0])
        xt = torch.empty((dw.cols, max(-(-m // 8) * 8, 8)), dtype=x.dtype, device=x.device)
        xt[:, :m].copy_(x2.t())
        yt = torch.empty((dw.rows, m), dtype=x.dtype, device=x.device)
        _launch(dw, xt, m, yt, _bias(bias, dw, x.device), False)
        y = yt.t().reshape(lead + (dw.rows,))
        if out is None:
            return y.contiguous()
        if accumulate:
            out.add_(y)
        else:
            out.copy_(y)
        return out
