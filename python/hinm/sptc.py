"""Sparse-tensor-core (`mma.sp`) compression: 2:4 for float16/bfloat16/int8 and 1:2 for float32
(tf32), in two views of the same metadata bytes:

- ``layout="cutlass"``: PyTorch's CUTLASS layout (`meta_reordered` of
  ``torch.sparse._semi_structured_conversions``), int16 [M, K/16] (f16/bf16), int16 [M, K/8] (f32)
  or int32 [M, K/32] (int8), byte-identical to torch;
- ``layout="lanes"``: uint32 [blocks, 32], word L of each 128-byte block being the metadata
  register `e` of lane L of one `mma.sp` (two m16 tiles via selectors 0/1 for 16-bit types).

Codes are always ascending (valid for `mma.sp::ordered_metadata`). Chunks with more nonzeros than
the pattern allows are an error (torch silently drops values; hinm refuses)."""

from __future__ import annotations

import warnings
from typing import Any, Tuple

import numpy as np

from . import _C
from ._arrays import as_array, contiguous, dtype_name, empty, is_torch, require_2d

_SPTC_DTYPES = ("float16", "bfloat16", "int8", "float32")
LAYOUTS = ("cutlass", "lanes")


def _meta_shape(dtype: str, rows: int, cols: int, layout: str) -> Tuple[Tuple[int, ...], str]:
    words = _C.sptc_meta_words(dtype, rows, cols)
    if layout == "lanes":
        return (words // 32, 32), "uint32"
    if layout != "cutlass":
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if dtype == "int8":
        return (rows, cols // 32), "int32"
    return (rows, cols // (8 if dtype == "float32" else 16)), "int16"


def _check_dtype(x: Any, name: str) -> str:
    dt = dtype_name(x)
    if dt not in _SPTC_DTYPES:
        raise TypeError(f"{name}: sparse tensor cores take {', '.join(_SPTC_DTYPES)}, not {dt}")
    return dt


def _empty_meta(shape, dtype: str, like: Any) -> Any:
    if is_torch(like) and dtype == "uint32":
        import torch

        return torch.empty(shape, dtype=torch.uint32, device=like.device)
    return empty(shape, dtype, like)


def sptc_compress(dense: Any, layout: str = "cutlass") -> Tuple[Any, Any]:
    """(values [M, K/2], metadata) of a dense 2:4 (f16/bf16/int8) or 1:2 (f32) matrix [M, K].

    M must be a multiple of 32 (16 for int8) and K of 32 (f16/bf16), 16 (f32) or 64 (int8)."""
    dense = as_array(dense, "dense")
    require_2d(dense, "dense")
    dt = _check_dtype(dense, "dense")
    m, k = (int(s) for s in dense.shape)
    shape, meta_dt = _meta_shape(dt, m, k, layout)
    dense = contiguous(dense)
    values = empty((m, k // 2), dt, dense)
    meta = _empty_meta(shape, meta_dt, dense)
    _C.sptc_compress(dense, values, meta)
    return values, meta


def sptc_decompress(values: Any, metadata: Any, layout: str = "cutlass") -> Any:
    """The dense [M, 2·values.shape[1]] matrix from `sptc_compress` output (either layout)."""
    values = as_array(values, "values")
    metadata = as_array(metadata, "metadata")
    require_2d(values, "values")
    dt = _check_dtype(values, "values")
    m, k = int(values.shape[0]), 2 * int(values.shape[1])
    shape, meta_dt = _meta_shape(dt, m, k, layout)
    if tuple(metadata.shape) != shape or dtype_name(metadata) != meta_dt:
        raise ValueError(f"metadata for layout {layout!r} must be {meta_dt} {shape}, got "
                         f"{dtype_name(metadata)} {tuple(metadata.shape)}")
    dense = empty((m, k), dt, values)
    _C.sptc_decompress(contiguous(values), contiguous(metadata), dense)
    return dense


def sptc_metadata_from_positions(positions: Any, dtype: str, cols: int, layout: str = "lanes") -> Any:
    """Metadata for an already compressed matrix from its in-group positions (uint8 [M, K/2], as in
    `NMTensor.indices` for 2:4, or the kept element 0/1 of each pair for f32 1:2)."""
    positions = as_array(positions, "positions")
    require_2d(positions, "positions")
    if dtype_name(positions) != "uint8":
        raise TypeError(f"positions must be uint8, got {dtype_name(positions)}")
    shape, meta_dt = _meta_shape(dtype, int(positions.shape[0]), int(cols), layout)
    meta = _empty_meta(shape, meta_dt, positions)
    _C.sptc_metadata_from_positions(contiguous(positions), dtype, int(cols), meta)
    return meta


def to_semi_structured(dense: Any) -> Any:
    """A `torch.sparse.SparseSemiStructuredTensorCUTLASS` built from hinm's compression (no torch
    conversion code involved). torch only runs it on CUDA; on CPU it is a container."""
    import torch
    from torch.sparse import SparseSemiStructuredTensorCUTLASS

    dense = as_array(dense, "dense")
    if not is_torch(dense):
        dense = torch.from_numpy(np.ascontiguousarray(dense))
    values, meta = sptc_compress(dense, layout="cutlass")
    with warnings.catch_warnings():  # torch flags the whole semi-structured API as a prototype
        warnings.simplefilter("ignore", UserWarning)
        return SparseSemiStructuredTensorCUTLASS(dense.shape, packed=values, meta=meta, packed_t=None, meta_t=None,
                                                 compressed_swizzled_bitmask=None, requires_grad=False)


def from_semi_structured(tensor: Any) -> Any:
    """The dense matrix of a CUTLASS-backed `SparseSemiStructuredTensor` (its packed values and
    meta decoded by hinm)."""
    packed, meta = getattr(tensor, "packed", None), getattr(tensor, "meta", None)
    if packed is None or meta is None:
        raise TypeError("expected a CUTLASS SparseSemiStructuredTensor (with .packed and .meta)")
    return sptc_decompress(packed, meta, layout="cutlass")
