"""Sparse products with a compressed weight: ``linear`` (x Wᵀ + bias) and ``spmm`` (W @ B).

Both accept an :class:`~hinm.NMTensor` or a HiNM tensor (any object with ``values``, ``indices``,
``col_idx``, ``row_perm``, ``shape``, ``v``, ``n``, ``m`` in the HiNM container layout, see
cpp/include/hinm/hinm_format.hpp). Activations and outputs are float32; weight values may be
float32, float16, bfloat16 or int8 (float32 accumulation). numpy in -> numpy out, torch in -> torch
out; contiguous inputs are never copied. CUDA tensors go to the CUDA kernels when hinm has them.

The CPU kernels are multithreaded (``hinm.set_num_threads``) and give bit-identical results for
any thread count. A weight's in-group positions and kept columns are checked at its first
product (ValueError naming the first bad group or repeated column) and again after a visible
in-place edit of its indices or col_idx."""

from __future__ import annotations

import sys
import weakref
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from . import _C
from ._arrays import as_array, contiguous, dtype_name, edit_token, empty, is_cuda, is_torch, to_numpy
from .nm import NMTensor

__all__ = ["linear", "spmm", "prepack", "PrepackedWeight"]

# Below this many activations the kernels decode weights from a table derived from the indices
# (bit masks; for 1:2 and 2:4, the positions packed in 2 bits): built once per weight and kept here
# (dropped with the weight) while the indices cannot have changed (see _arrays.edit_token).
_ROWS_PATH_BATCH = 16
_MASKS: "weakref.WeakKeyDictionary[Any, list]" = weakref.WeakKeyDictionary()
_KEYS = ("values", "indices", "col_idx", "row_perm")


@dataclass(frozen=True)
class _Weight:
    values: Any
    indices: Any
    col_idx: Optional[Any]
    row_perm: Optional[Any]
    rows: int
    cols: int
    v: int
    kept: int
    n: int
    m: int

    def args(self) -> tuple:
        return (self.values, self.indices, self.col_idx, self.row_perm, self.rows, self.cols, self.v,
                self.kept, self.n, self.m)


def _attr(w: Any, name: str) -> Any:
    if hasattr(w, name):
        return getattr(w, name)
    cfg = getattr(w, "config", None)
    if cfg is not None and hasattr(cfg, name):
        return getattr(cfg, name)
    raise TypeError(f"weight: {type(w).__name__} has no '{name}' (expected an NMTensor or a HiNM tensor)")


def _weight(w: Any) -> _Weight:
    """The raw container arrays of an NMTensor or a HiNM tensor."""
    if isinstance(w, NMTensor):
        r, k = (int(s) for s in w.shape)
        return _Weight(contiguous(w.values), contiguous(w.indices), None, None, r, k, max(r, 1), k, w.n, w.m)
    if not hasattr(w, "values") or not hasattr(w, "indices"):
        raise TypeError(f"weight must be an NMTensor or a HiNM tensor, got {type(w).__name__}")
    r, k = (int(s) for s in _attr(w, "shape"))
    n, m, v = int(_attr(w, "n")), int(_attr(w, "m")), int(_attr(w, "v"))
    values = contiguous(w.values)
    kept = int(values.shape[1]) // n * m if len(values.shape) == 2 else -1
    col_idx = getattr(w, "col_idx", None)
    row_perm = getattr(w, "row_perm", None)
    return _Weight(values, contiguous(w.indices), None if col_idx is None else contiguous(col_idx),
                   None if row_perm is None else contiguous(row_perm), r, k, v, kept, n, m)


def _cached(w: Any) -> Optional[list]:
    """[arrays, (checked token,), parts, (token, masks)] remembered for w, while w still holds
    those arrays."""
    try:
        hit = _MASKS.get(w)
    except TypeError:  # not weak-referenceable: nothing is cached
        return None
    if hit is not None and all(a is getattr(w, name, None) for a, name in zip(hit[0], _KEYS)):
        return hit
    return None


def _own_arrays(w: Any, parts: _Weight) -> bool:
    """Whether parts holds w's own arrays, not contiguous copies (a copy would miss later edits)."""
    return all(getattr(parts, name) is getattr(w, name, None) for name in _KEYS)


def _parts(w: Any) -> _Weight:
    hit = _cached(w)
    if hit is not None:
        return hit[2]
    parts = _weight(w)
    if _own_arrays(w, parts):
        try:
            _MASKS[w] = [tuple(getattr(w, name, None) for name in _KEYS), None, parts, None]
        except (TypeError, AttributeError):
            pass
    return parts


def _state(w: Any) -> tuple:
    """The edit tokens of the arrays _check_structure and the masks depend on: indices, col_idx."""
    col_idx = getattr(w, "col_idx", None)
    return edit_token(w.indices), None if col_idx is None else edit_token(col_idx)


def _check_distinct_columns(col_idx: np.ndarray) -> None:
    if col_idx.ndim != 2 or col_idx.shape[1] < 2:
        return  # shapes are the kernels' to check
    ordered = np.sort(col_idx, axis=1)
    twice = ordered[:, 1:] == ordered[:, :-1]
    if twice.any():
        t, j = (int(i) for i in np.argwhere(twice)[0])
        raise ValueError(f"weight: col_idx[{t}] lists column {int(ordered[t, j])} twice")


def _check_structure(w: Any, parts: _Weight) -> None:
    """Raises ValueError unless w is a valid container: in-group positions below m and ascending,
    each tile's kept columns distinct (the rest, ranges and row_perm, the kernels check per call).
    Checked at the first product and again after each visible edit of the indices or col_idx (see
    _arrays.edit_token); writeable numpy arrays are checked once per array. (The kernels clamp
    positions, so a bad one cannot reach outside the activations, but the product would be wrong.)"""
    token = _state(w)
    hit = _cached(w)
    if hit is not None and hit[1] is not None and hit[1][0] == token:
        return
    try:
        _C.validate_nm_positions(parts.indices, parts.n, parts.m)
    except ValueError as e:
        raise ValueError(f"weight: {e}") from None
    if parts.col_idx is not None:
        _check_distinct_columns(to_numpy(parts.col_idx))
    if hit is not None:
        hit[1] = (token,)


def _masks(w: Any, parts: _Weight) -> Optional[np.ndarray]:
    """The kernels' table derived from w's indices (cpp/include/hinm/spmm.hpp, build_spmm_masks),
    built at first use and cached with the weight: bit masks (needed: built per call when they
    cannot be kept), or for 1:2 and 2:4 position words (optional: only where they can be kept, as a
    stale copy would give wrong products); None for the other patterns with m = 2n."""
    token = edit_token(w.indices)
    hit = _cached(w)
    if hit is not None and hit[3] is not None and token is not None and hit[3][0] == token:
        return hit[3][1]  # the cached table: no layout query per call
    dtype, width = _C.spmm_masks_layout(*parts.args())
    if dtype is None:
        return None
    if dtype == "uint32" and (token is None or hit is None):
        return None
    masks = np.empty((int(parts.values.shape[0]), int(width)), dtype=dtype)
    _C.build_spmm_masks(*parts.args(), masks)
    if hit is not None and token is not None:
        hit[3] = (token, masks)
    return masks


def _needs_masks(parts: _Weight) -> bool:
    """Patterns with m = 2n decode from the indices directly; the others need bit masks."""
    return not (parts.m == 2 * parts.n and 16 % parts.n == 0)


# --- fast path -------------------------------------------------------------------------------
# A small product is mostly overhead, so repeated calls with the same weight skip the generic
# path: the weight's arrays, shape and masks go to C++ once (_C.SpmmWeight, cached per weight
# object by id, checked by a weak reference and the identity of its arrays), and per call only
# plain float32 activations and outputs are checked here; everything else (and every error)
# takes the generic path below, which gives the precise messages.
_FAST: dict = {}
_F32 = np.dtype(np.float32)


class _Prepared:
    __slots__ = ("ref", "plain", "values", "indices", "col_idx", "row_perm", "weight", "rows", "cols", "state",
                 "versions", "recheck", "torch_values")


def _prepare(w: Any, parts: _Weight) -> None:
    """Remembers the prepared C++ weight of w (when w can be weakly referenced, holds its arrays
    without copies, and its masks, if it needs any, can be kept)."""
    state = _state(w)
    if not _own_arrays(w, parts) or (_needs_masks(parts) and state[0] is None):
        return
    if _grad_wanted(getattr(w, "values", None)):
        return  # the generic path marks the product as having no backward
    try:
        key = id(w)
        ref = weakref.ref(w, lambda _, key=key: _FAST.pop(key, None))
    except TypeError:
        return
    masks = _masks(w, parts)
    p = _Prepared()
    # The edit state of indices and col_idx (checked structure, masks), compared per call in its
    # cheapest form: torch version counters; nothing for read-only numpy arrays that own their
    # memory (the flag is their contract) or writeable ones (checked once per array); else the
    # whole state.
    arrays = (w.indices, getattr(w, "col_idx", None))
    p.state = state
    p.versions = tuple((a, t[1]) for a, t in zip(arrays, state) if t is not None and t[0] == "torch")
    p.recheck = any(t is not None and t[0] != "torch" and a.base is not None for a, t in zip(arrays, state))
    p.ref, p.values, p.indices = ref, getattr(w, "values", None), getattr(w, "indices", None)
    p.torch_values = is_torch(p.values)
    p.plain = type(w) is NMTensor  # frozen, and without col_idx / row_perm
    p.col_idx, p.row_perm = getattr(w, "col_idx", None), getattr(w, "row_perm", None)
    p.weight = _C.spmm_weight(*parts.args(), masks)
    p.rows, p.cols = parts.rows, parts.cols
    _FAST[key] = p


def _fast(w: Any) -> Optional[_Prepared]:
    p = _FAST.get(id(w))
    if p is None or p.ref() is not w or p.values is not w.values or p.indices is not w.indices:
        return None
    for a, version in p.versions:
        if a._version != version:
            return None
    if p.torch_values and p.values.requires_grad:  # made a leaf that wants gradients since
        return None
    if p.recheck and _state(w) != p.state:
        return None
    if p.plain or (p.col_idx is getattr(w, "col_idx", None) and p.row_perm is getattr(w, "row_perm", None)):
        return p
    return None


def _plain(a: Any) -> Optional[np.ndarray]:
    """a as a numpy view when it is a float32 CPU array/tensor the kernels take as is, else None."""
    if type(a) is np.ndarray:
        return a if a.dtype is _F32 or a.dtype == _F32 else None
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(a, torch.Tensor) and a.dtype is torch.float32 and a.is_cpu \
            and not a.requires_grad:
        return a.numpy()
    return None


def _fast_linear(p: _Prepared, x: Any, bias: Any, out: Any, accumulate: bool) -> Any:
    """The product on the fast path, or NotImplemented where the generic path must run."""
    xn = x if type(x) is np.ndarray and x.dtype == _F32 else _plain(x)
    if xn is None or xn.ndim == 0 or xn.shape[-1] != p.cols:
        return NotImplemented
    shape = (xn.shape[0], p.rows)
    if xn.ndim != 2:  # leading batch dims: flattened views only (as the generic path)
        if not xn.flags.c_contiguous:
            return NotImplemented
        shape = xn.shape[:-1] + (p.rows,)
        xn = xn.reshape(-1, p.cols)
    if bias is not None:
        bias = _plain(bias)
        if bias is None or bias.ndim != 1:
            return NotImplemented
    if out is None:
        if accumulate:
            return NotImplemented
        yn = np.empty(shape, _F32)
        y = yn if type(x) is np.ndarray else sys.modules["torch"].from_numpy(yn)
    else:
        y = out
        yn = out if type(out) is np.ndarray and out.dtype == _F32 else _plain(out)
        if yn is None or yn.shape != shape or not yn.flags.c_contiguous:
            return NotImplemented
    if yn.ndim != 2:
        yn = yn.reshape(-1, p.rows)
    try:
        _C.linear_w(p.weight, xn, bias, yn, accumulate)
    except (TypeError, ValueError):
        return NotImplemented  # the generic path names the problem
    return y


def _is_contiguous(a: Any) -> bool:
    return bool(a.is_contiguous()) if is_torch(a) else bool(a.flags.c_contiguous)


def _require_f32(a: Any, name: str) -> None:
    if isinstance(a, np.ndarray) and a.dtype == np.float32:  # fast path: no dtype-name lookup
        return
    dt = dtype_name(a)
    if dt != "float32":
        raise TypeError(f"{name} must be float32, got {dt}")


def _output(out: Optional[Any], shape: tuple, like: Any, accumulate: bool) -> Any:
    if out is None:
        if accumulate:
            raise ValueError("accumulate=True needs an out= buffer to add into")
        return empty(shape, "float32", like)
    given = out
    out = as_array(out, "out")
    if is_cuda(out):
        raise ValueError("out is on a GPU but the inputs are on the CPU")
    if tuple(out.shape) != tuple(shape):
        raise ValueError(f"out must have shape {tuple(shape)}, got {tuple(out.shape)}")
    _require_f32(out, "out")
    if not _is_contiguous(out):
        raise ValueError("out must be contiguous (row-major)")
    if isinstance(out, np.ndarray) and not out.flags.writeable:
        raise ValueError("out is a read-only array")
    return given if is_torch(given) or isinstance(given, np.ndarray) else out


def _fast_spmm(p: _Prepared, b: Any, out: Any, accumulate: bool) -> Any:
    """spmm on the fast path, or NotImplemented where the generic path must run."""
    bn = _plain(b)
    if bn is None or bn.ndim != 2 or bn.shape[0] != p.cols:
        return NotImplemented
    if out is None:
        if accumulate:
            return NotImplemented
        yn = np.empty((p.rows, bn.shape[1]), _F32)
        y = yn if type(b) is np.ndarray else sys.modules["torch"].from_numpy(yn)
    else:
        y, yn = out, _plain(out)
        if yn is None or yn.ndim != 2 or not yn.flags.c_contiguous:
            return NotImplemented
    try:
        _C.spmm_w(p.weight, bn, yn, accumulate)
    except (TypeError, ValueError):
        return NotImplemented
    return y


# ---- autograd: products have no backward, and say so ------------------------------------------
def _grad_wanted(*arrays: Any) -> bool:
    """Whether autograd would want a gradient through any of arrays (torch tensors requiring grad
    under grad mode)."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.is_grad_enabled():
        return False
    return any(isinstance(a, torch.Tensor) and a.requires_grad for a in arrays)


_NO_BACKWARD = None


def _no_backward_function():
    """A torch.autograd.Function whose output is its first input and whose backward raises: the
    product stays usable in grad mode (evaluation without no_grad), while a gradient through it,
    which hinm does not compute, is an error instead of silently missing."""
    global _NO_BACKWARD
    if _NO_BACKWARD is None:
        import torch

        class NoBackward(torch.autograd.Function):
            @staticmethod
            def forward(ctx, name, y, *inputs):
                ctx.name = name
                return y

            @staticmethod
            def backward(ctx, *grads):
                raise RuntimeError(f"hinm.{ctx.name} has no backward (the sparse kernels are inference-only): "
                                   "run it under torch.no_grad(), or train a masked dense layer (hinm.training) "
                                   "and compress afterwards")

        _NO_BACKWARD = NoBackward
    return _NO_BACKWARD


def _without_backward(name: str, out: Any, grad_inputs: tuple, compute) -> Any:
    """compute() with autograd off, its torch result joined to the graph of grad_inputs by
    _no_backward_function."""
    if out is not None:
        raise RuntimeError(f"hinm.{name}: out= cannot be used when an input requires grad (as with torch's "
                           "out= functions); run it under torch.no_grad()")
    torch = sys.modules["torch"]
    with torch.no_grad():
        y = compute()
    if not is_torch(y):
        raise RuntimeError(f"hinm.{name}: an input requires grad, but the result is a numpy array, which "
                           "cannot carry it; run it under torch.no_grad() or pass x as a torch tensor")
    return _no_backward_function().apply(name, y, *[a for a in grad_inputs if is_torch(a)])


class PrepackedWeight:
    """A weight plus a second copy of its values and indices laid out for the CPU kernels (see
    :func:`prepack`). :func:`linear` and :func:`spmm` take it in place of the
    weight; ``.weight`` is the original."""

    __slots__ = ("weight", "pack_values", "pack_indices", "_prepared", "_versions")

    def __init__(self, weight: Any, pack_values: Any, pack_indices: Any, prepared: "_Prepared") -> None:
        self.weight, self.pack_values, self.pack_indices, self._prepared = weight, pack_values, pack_indices, prepared
        # torch arrays of the weight and their versions: an edit in place after packing is an error
        arrays = (getattr(weight, name, None) for name in _KEYS)
        self._versions = tuple((a, a._version) for a in arrays if is_torch(a))

    def _check(self) -> None:
        for a, version in self._versions:
            if a._version != version:
                raise RuntimeError("hinm: the weight was edited in place after hinm.prepack; its packed copy is "
                                   "stale (call hinm.prepack again)")

    @property
    def shape(self) -> tuple:
        return (self._prepared.rows, self._prepared.cols)

    @property
    def nbytes(self) -> int:
        """Bytes of the packed copy (on top of the weight's own arrays)."""
        return int(self.pack_values.nbytes + self.pack_indices.nbytes) if self.pack_values is not None else 0


def prepack(w: Any) -> PrepackedWeight:
    """w (NMTensor or HiNM tensor, CPU) with its values and indices copied once more in the layout
    the few-activation CPU kernels read fastest: for every block of 8 rows, each step of 16 values
    of all 8 rows stored together (one memory stream instead of 16 short ones). Patterns with
    m = 2n on AVX-512 machines use it at batches 1..12, float32 2:4 weights at every batch;
    elsewhere the result behaves exactly like w, and it is always the same bits as w. For 1:2 and
    2:4 the weight alone already has its positions read in 2 bits (a table cached with it), so at
    batch 1 the pack adds only the single stream: plain 2:4 3072x768, 1.01-1.16x; other shapes
    within the run-to-run noise (with byte positions, as in 4:8, the stream alone measured ~4%).
    Past batch 12, float32 2:4 reads the 8-row blocks in place of 64 short row pieces per chunk
    (2 threads, Intel Xeon: plain 2:4 1.05-1.16x at batch 64-1952, 1.1-1.6x at batch 16;
    HiNM 75% 1.00-1.09x). The copy
    costs the weight's value memory once more, plus its index memory (a quarter of it for 1:2 and
    2:4, whose positions are packed in 2 bits), and it is not updated: after editing w's arrays in
    place, prepack again (the old copy would give results mixing old and new values; with torch
    arrays, whose edits are counted, using the old copy raises RuntimeError)."""
    if isinstance(w, PrepackedWeight):
        return w
    if _grad_wanted(getattr(w, "values", None)):
        raise RuntimeError("prepack: the weight's values require grad; a packed copy is for inference "
                           "(pass values.detach(), or call it under torch.no_grad())")
    parts = _parts(w)  # registers w, so its position words are cached and shared with the pack
    _check_structure(w, parts)
    if is_cuda(parts.values):
        raise ValueError("prepack: the weight is on a GPU; the packed layout is for the CPU kernels")
    size, position_bytes = (int(s) for s in _C.rows_pack_sizes(*parts.args()))
    pack_values = pack_indices = None
    if size > 0:
        pack_values = empty((size,), dtype_name(parts.values), parts.values)
        pack_indices = empty((position_bytes,), "uint8", parts.values)
        _C.pack_rows(*parts.args(), pack_values, pack_indices)
    p = _Prepared()
    p.weight = _C.spmm_weight(*parts.args(), _masks(w, parts), pack_values, pack_indices)
    p.rows, p.cols = parts.rows, parts.cols
    return PrepackedWeight(w, pack_values, pack_indices, p)


def _cuda_op(name: str):
    try:
        from . import _cuda
    except ImportError as e:
        raise RuntimeError(f"hinm.{name}: the input is a CUDA tensor but hinm was built without CUDA "
                           f"(or its CUDA module failed to load: {e})") from None
    fn = getattr(_cuda, f"{name}_cuda", None)
    if fn is None:
        raise RuntimeError(f"hinm.{name}: this build has no CUDA {name} kernel")
    return fn


def linear(x: Any, w: Any, bias: Optional[Any] = None, out: Optional[Any] = None, accumulate: bool = False) -> Any:
    """y = x · Wᵀ + bias for a compressed W [R, K] (NMTensor or HiNM tensor).

    x: float32 [..., K] (any leading batch dims), bias: float32 [R] or None. Returns [..., R]
    float32 in x's framework. ``out=`` (float32, contiguous, shape [..., R], not overlapping x or
    bias) receives the result;
    with ``accumulate=True`` the product and bias are *added* to ``out`` (used to sum several
    sparse terms, e.g. a TASD series, into one buffer). A TASDSeries W runs every term that way.
    W may be a :class:`PrepackedWeight` (:func:`prepack`). No backward: with torch inputs that
    require grad, the result's backward raises (out= is then refused)."""
    if type(w) is PrepackedWeight:
        w._check()
        y = _fast_linear(w._prepared, x, bias, out, accumulate)
        if y is not NotImplemented:
            return y
        w = w.weight  # the generic path names the problem (or handles the unusual input)
    p = _fast(w)
    if p is not None:
        y = _fast_linear(p, x, bias, out, accumulate)
        if y is not NotImplemented:
            return y
    if _grad_wanted(x, bias, getattr(w, "values", None)):
        return _without_backward("linear", out, (x, bias, getattr(w, "values", None)),
                                 lambda: linear(x, w, bias, None, accumulate))
    if type(w).__name__ == "TASDSeries":
        from .tasd import tasd_linear

        return tasd_linear(x, w, bias, out=out, accumulate=accumulate)
    x = as_array(x, "x")
    if is_cuda(x):
        return _cuda_op("linear")(x, w, bias=bias, out=out, accumulate=accumulate)
    parts = _parts(w)
    _check_structure(w, parts)
    _require_f32(x, "x")
    if len(x.shape) < 1 or int(x.shape[-1]) != parts.cols:
        raise ValueError(f"x must have shape [..., {parts.cols}] for a weight of shape {(parts.rows, parts.cols)}, "
                         f"got {tuple(x.shape)}")
    lead = tuple(int(s) for s in x.shape[:-1])
    if len(x.shape) != 2 and not _is_contiguous(x):
        raise ValueError("x must be contiguous when it has other than 2 dimensions (call .contiguous())")
    x2 = x.reshape(-1, parts.cols) if len(x.shape) != 2 else x
    if bias is not None:
        bias = as_array(bias, "bias")
        _require_f32(bias, "bias")
        if tuple(bias.shape) != (parts.rows,):
            raise ValueError(f"bias must have shape ({parts.rows},), got {tuple(bias.shape)}")
    y = _output(out, lead + (parts.rows,), x, accumulate)
    y2 = y.reshape(-1, parts.rows) if len(y.shape) != 2 else y
    masks = _masks(w, parts) if int(x2.shape[0]) < _ROWS_PATH_BATCH else None
    _C.linear(x2, *parts.args(), bias, y2, bool(accumulate), masks)
    if _fast(w) is None:
        _prepare(w, parts)
    return y


def spmm(w: Any, b: Any, out: Optional[Any] = None, accumulate: bool = False) -> Any:
    """W @ B for a compressed W [R, K] and a float32 B [K, N]; returns [R, N] float32 in B's
    framework. ``out=`` / ``accumulate=`` and autograd as in :func:`linear`; W may be a
    :class:`PrepackedWeight`."""
    if type(w) is PrepackedWeight:
        w._check()
        y = _fast_spmm(w._prepared, b, out, accumulate)
        if y is not NotImplemented:
            return y
        w = w.weight
    p = _fast(w)
    if p is not None:
        y = _fast_spmm(p, b, out, accumulate)
        if y is not NotImplemented:
            return y
    if _grad_wanted(b, getattr(w, "values", None)):
        return _without_backward("spmm", out, (b, getattr(w, "values", None)), lambda: spmm(w, b, None, accumulate))
    b = as_array(b, "b")
    if is_cuda(b):
        return _cuda_op("spmm")(w, b, out=out, accumulate=accumulate)
    parts = _parts(w)
    _check_structure(w, parts)
    _require_f32(b, "b")
    if len(b.shape) != 2 or int(b.shape[0]) != parts.cols:
        raise ValueError(f"b must have shape ({parts.cols}, N) for a weight of shape {(parts.rows, parts.cols)}, "
                         f"got {tuple(b.shape)}")
    y = _output(out, (parts.rows, int(b.shape[1])), b, accumulate)
    masks = _masks(w, parts) if int(b.shape[1]) < _ROWS_PATH_BATCH else None
    _C.spmm(*parts.args(), b, y, bool(accumulate), masks)
    if _fast(w) is None:
        _prepare(w, parts)
    return y
