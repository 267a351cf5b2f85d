"""NVIDIA sparse-tensor-core (mma.sp) format: 2:4 (float16, bfloat16, int8) and tf32 1:2 (float32).

``sptc_compress(dense)`` gives the compressed values [M, K/2] and the metadata in one of two
layouts, which hold the SAME bytes:

* ``"cutlass"``: torch's ``sparse_semi_structured_from_dense_cutlass`` ``meta_reordered``,
  byte-identical, with its dtype/shape: int16 [M, K/16] (float16/bfloat16), int16 [M, K/8]
  (float32), int32 [M, K/32] (int8). This is what ``SparseSemiStructuredTensorCUTLASS`` holds.
* ``"lanes"``: uint32 [n_blocks, 32]; word L of a 128-byte block is the ``e`` operand of lane L
  of an mma.sp (m16n8k32 f16/bf16, m16n8k16 tf32, m16n8k64 int8), blocks in torch's order.

Codes are always ascending (legal for ``mma.sp::ordered_metadata``). Unlike torch, a chunk with too
many nonzeros raises instead of silently dropping values."""

from __future__ import annotations

import warnings
from typing import Any, Optional, Tuple

import numpy as np

from . import _C
from ._arrays import as_array, contiguous, dtype_name, empty, from_numpy, is_cuda, is_torch, require_2d, to_numpy

LAYOUTS = ("cutlass", "lanes")

# dtype -> (dense columns per metadata element, element bytes, rows per block, dense columns per block)
_GEOMETRY = {
    "float16": (16, 2, 32, 32),
    "bfloat16": (16, 2, 32, 32),
    "float32": (8, 2, 32, 16),
    "int8": (32, 4, 16, 64),
}
_INT_OF_SIZE = {2: ("int16", "uint16"), 4: ("int32", "uint32")}


def _check_layout(layout: str) -> str:
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    return layout


def _geometry(dtype: str, what: str) -> Tuple[int, int, int, int]:
    if dtype not in _GEOMETRY:
        raise TypeError(f"{what}: dtype {dtype} has no sparse-tensor-core format "
                        "(float16, bfloat16, int8: 2:4; float32: 1:2)")
    return _GEOMETRY[dtype]


def sptc_metadata_shape(dtype: str, rows: int, cols: int, layout: str = "cutlass") -> Tuple[Tuple[int, int], str]:
    """(shape, dtype name) of the metadata of a dense [rows, cols] matrix of ``dtype``."""
    _check_layout(layout)
    elem_cols, elem_bytes, block_rows, block_cols = _geometry(dtype, "dense")
    _C.sptc_check_shape(dtype, int(rows), int(cols), "dense")
    if layout == "lanes":
        return ((rows // block_rows) * (cols // block_cols), 32), "uint32"
    return (rows, cols // elem_cols), _INT_OF_SIZE[elem_bytes][0]


def _bytes(a: Any) -> Any:
    """A uint8 view of a contiguous 2-D array (what the C++ side reads/writes)."""
    if is_torch(a):
        import torch

        return a.reshape(-1).view(torch.uint8)
    return a.reshape(-1).view(np.uint8)


def _reinterpret(a: Any, dtype: str, shape) -> Any:
    """The same bytes as another integer dtype and shape (no copy)."""
    if is_torch(a):
        import torch

        return a.reshape(-1).view(torch.uint8).view(getattr(torch, dtype)).reshape(shape)
    return a.reshape(-1).view(np.uint8).view(dtype).reshape(shape)


def _same_framework(a: Any, like: Any) -> Any:
    if is_torch(a) == is_torch(like):
        return a.to(like.device) if is_torch(a) else a
    return from_numpy(to_numpy(a), like)


def _cpu(x: Any) -> Any:
    return x.cpu() if is_cuda(x) else x


def _back(x: Any, device: Any) -> Any:
    return x if device is None else x.to(device)


def sptc_compress(dense: Any, layout: str = "cutlass") -> Tuple[Any, Any]:
    """Compress a 2:4 (float16, bfloat16, int8) or 1:2 (float32, used as tf32) dense [M, K] matrix.

    Returns (values [M, K/2] of dense's dtype, metadata in ``layout``), in dense's framework.
    M must be a multiple of 32 (16 for int8) and K of 32 (float16/bfloat16), 64 (int8) or 16
    (float32). Chunks with fewer nonzeros than allowed store zeros; more raise ValueError naming
    the row and chunk. CUDA tensors are compressed on the CPU and returned on their device."""
    _check_layout(layout)
    dense = as_array(dense, "dense")
    require_2d(dense, "dense")
    dt = dtype_name(dense)
    _geometry(dt, "dense")
    device = dense.device if is_cuda(dense) else None
    dense = contiguous(_cpu(dense))
    m, k = (int(s) for s in dense.shape)
    shape, mdt = sptc_metadata_shape(dt, m, k, layout)
    values = empty((m, k // 2), dt, dense)
    meta = empty(shape, mdt, dense)
    _C.sptc_compress(dense, values, _bytes(meta))
    return _back(values, device), _back(meta, device)


def _metadata_in(metadata: Any, values_like: Any, dt: str, m: int, k: int, layout: str) -> Any:
    """Checks metadata against the layout's shape and element size; returns its uint8 view."""
    shape, mdt = sptc_metadata_shape(dt, m, k, layout)
    metadata = as_array(metadata, "metadata")
    got = dtype_name(metadata)
    allowed = _INT_OF_SIZE[np.dtype(mdt).itemsize]
    if got not in allowed:
        raise TypeError(f"metadata: {layout} layout of {dt} needs dtype {' or '.join(allowed)}, got {got}")
    if tuple(metadata.shape) != tuple(shape):
        raise ValueError(f"metadata: {layout} layout of a {dt} [{m}, {k}] matrix has shape {tuple(shape)}, "
                         f"got {tuple(metadata.shape)}")
    return _bytes(contiguous(_same_framework(_cpu(metadata), values_like)))


def sptc_decompress(values: Any, metadata: Any, layout: str = "cutlass") -> Any:
    """Dense [M, 2*values.shape[1]] matrix (values' dtype and framework) from compressed values and
    metadata in ``layout``; bit-exact. Illegal (non-ascending) codes raise ValueError."""
    _check_layout(layout)
    values = as_array(values, "values")
    require_2d(values, "values")
    dt = dtype_name(values)
    _geometry(dt, "values")
    device = values.device if is_cuda(values) else None
    values = contiguous(_cpu(values))
    m, k = int(values.shape[0]), 2 * int(values.shape[1])
    _C.sptc_check_shape(dt, m, k, "values (as dense [M, 2*cols])")
    meta = _metadata_in(metadata, values, dt, m, k, layout)
    dense = empty((m, k), dt, values)
    _C.sptc_decompress(values, meta, dense)
    return _back(dense, device)


def sptc_metadata_from_positions(positions: Any, dtype: str = "float16", cols: Optional[int] = None,
                                 layout: str = "lanes") -> Any:
    """Metadata of an already N:M-compressed matrix from its in-group positions.

    positions: uint8 [M, K/2] as ``NMTensor.indices`` / ``HiNMTensor.indices`` (2:4: ascending pairs
    in [0, 4) for float16, bfloat16, int8; 1:2: one position in {0, 1} per pair for float32).
    ``dtype`` is the values' dtype (it picks the geometry); ``cols`` (K), if given, must be
    2 * positions.shape[1]. Returns metadata in ``layout``, in positions' framework."""
    _check_layout(layout)
    dtype = str(dtype).removeprefix("torch.")
    _geometry(dtype, "dtype")
    positions = as_array(positions, "positions")
    require_2d(positions, "positions")
    if dtype_name(positions) != "uint8":
        raise TypeError(f"positions must be uint8, got {dtype_name(positions)}")
    device = positions.device if is_cuda(positions) else None
    positions = contiguous(_cpu(positions))
    m, k = int(positions.shape[0]), 2 * int(positions.shape[1])
    if cols is not None and int(cols) != k:
        raise ValueError(f"cols={cols} does not match positions of shape {tuple(positions.shape)} (K = {k})")
    _C.sptc_check_shape(dtype, m, k, "positions (as dense [M, 2*cols])")
    shape, mdt = sptc_metadata_shape(dtype, m, k, layout)
    meta = empty(shape, mdt, positions)
    _C.sptc_metadata_from_positions(positions, dtype, _bytes(meta))
    return _back(meta, device)


def sptc_convert_layout(metadata: Any, dtype: str, shape: Tuple[int, int], src: str, dst: str) -> Any:
    """The same metadata bytes viewed in layout ``dst`` (no copy for contiguous input). ``shape`` is
    the dense [M, K] shape and ``dtype`` the values' dtype."""
    _check_layout(src)
    _check_layout(dst)
    dtype = str(dtype).removeprefix("torch.")
    m, k = (int(s) for s in shape)
    metadata = as_array(metadata, "metadata")
    src_shape, src_dt = sptc_metadata_shape(dtype, m, k, src)
    if tuple(metadata.shape) != tuple(src_shape) or dtype_name(metadata) not in _INT_OF_SIZE[np.dtype(src_dt).itemsize]:
        raise ValueError(f"metadata: expected {src_dt} {tuple(src_shape)} for the {src} layout, "
                         f"got {dtype_name(metadata)} {tuple(metadata.shape)}")
    dst_shape, dst_dt = sptc_metadata_shape(dtype, m, k, dst)
    return _reinterpret(contiguous(metadata), dst_dt, dst_shape)


# ---- torch.sparse.SparseSemiStructuredTensor interop ------------------------------------------------

def sptc_to_torch(values: Any, metadata: Any, layout: str = "cutlass") -> Any:
    """A ``torch.sparse.SparseSemiStructuredTensorCUTLASS`` holding values and metadata (no copy
    for contiguous torch input; numpy input is converted). torch's own shape minimums apply
    (float16/bfloat16: 32x64, float32: 32x32, int8: 16x128). torch only multiplies these on CUDA;
    on the CPU the object supports ``to_dense()`` (torch 2.13's float32 ``to_dense`` scatters float
    halves and can alter values whose low 16 bits look like a half NaN; ``sptc_decompress`` is exact)."""
    import torch
    from torch.sparse import SparseSemiStructuredTensorCUTLASS as Cutlass

    values = as_array(values, "values")
    if not is_torch(values):
        values = torch.from_numpy(np.ascontiguousarray(values))
    require_2d(values, "values")
    dt = dtype_name(values)
    _geometry(dt, "values")
    m, k = int(values.shape[0]), 2 * int(values.shape[1])
    meta = _metadata_in(metadata, values, dt, m, k, layout)
    cutlass_shape, cutlass_dt = sptc_metadata_shape(dt, m, k, "cutlass")
    meta = _reinterpret(meta, cutlass_dt, cutlass_shape)
    limits = Cutlass._DTYPE_SHAPE_CONSTRAINTS[values.dtype]
    if m < limits.sparse_min_rows or k < limits.sparse_min_cols:
        raise ValueError(f"torch's SparseSemiStructuredTensorCUTLASS needs a {dt} matrix of at least "
                         f"{limits.sparse_min_rows}x{limits.sparse_min_cols}, got {m}x{k}")
    with warnings.catch_warnings():  # torch flags the whole semi-structured API as a prototype
        warnings.simplefilter("ignore", UserWarning)
        return Cutlass(torch.Size((m, k)), packed=values.contiguous(), meta=meta, packed_t=None, meta_t=None,
                       compressed_swizzled_bitmask=None)


def sptc_from_torch(tensor: Any, layout: str = "cutlass") -> Tuple[Any, Any]:
    """(values, metadata in ``layout``) of a ``SparseSemiStructuredTensorCUTLASS`` (views, no copy).
    cuSPARSELt-backed tensors raise TypeError: their metadata layout is opaque."""
    _check_layout(layout)
    from torch.sparse import SparseSemiStructuredTensor, SparseSemiStructuredTensorCUTLASS

    if not isinstance(tensor, SparseSemiStructuredTensorCUTLASS):
        if isinstance(tensor, SparseSemiStructuredTensor):
            raise TypeError(f"{type(tensor).__name__}: only the CUTLASS backend has a documented metadata layout "
                            "(cuSPARSELt's is opaque); build it with SparseSemiStructuredTensor._FORCE_CUTLASS = True")
        raise TypeError(f"expected a torch.sparse.SparseSemiStructuredTensorCUTLASS, got {type(tensor).__name__}")
    if tensor.packed is None or tensor.meta is None or tensor.meta.ndim != 2:
        raise ValueError("SparseSemiStructuredTensorCUTLASS has no (packed, meta) pair (transposed-only tensor?)")
    values, meta = tensor.packed, tensor.meta
    m, k = (int(s) for s in tensor.shape)
    dt = dtype_name(values)
    shape, mdt = sptc_metadata_shape(dt, m, k, "cutlass")
    if tuple(values.shape) != (m, k // 2) or tuple(meta.shape) != tuple(shape):
        raise ValueError(f"SparseSemiStructuredTensorCUTLASS of shape {(m, k)} holds packed {tuple(values.shape)} "
                         f"and meta {tuple(meta.shape)}; expected {(m, k // 2)} and {tuple(shape)}")
    if layout == "lanes":
        meta = sptc_convert_layout(meta, dt, (m, k), "cutlass", "lanes")
    return values, meta


def to_semi_structured(dense: Any) -> Any:
    """``sptc_to_torch(*sptc_compress(dense))``: a SparseSemiStructuredTensorCUTLASS built by hinm's
    compressor (numpy input becomes a torch tensor)."""
    import torch

    dense = as_array(dense, "dense")
    if not is_torch(dense):
        dense = torch.from_numpy(np.ascontiguousarray(dense))
    return sptc_to_torch(*sptc_compress(dense, layout="cutlass"), layout="cutlass")


def from_semi_structured(tensor: Any) -> Any:
    """The dense matrix of a SparseSemiStructuredTensorCUTLASS, decoded by hinm (bit-exact)."""
    return sptc_decompress(*sptc_from_torch(tensor, layout="cutlass"), layout="cutlass")
