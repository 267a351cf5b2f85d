"""Plain N:M sparsity: masks and the compressed `NMTensor` container."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional, Tuple

from . import _C
from ._arrays import (as_array, contiguous, dtype_name, empty, freeze, frozen, is_torch, require_2d,
                      require_weight_dtype, scores_f32)
from ._state import array_field, int_tensor, int_vector
from .pattern import NMConfig

NM_FORMAT_VERSION = 1


def _pattern(n: int, m: int) -> NMConfig:
    try:
        return NMConfig(n, m)  # validates: integers (numpy ones too), not bools
    except TypeError:
        raise TypeError(f"n and m must be integers, got {n!r}:{m!r}") from None


def nm_mask(scores: Any, n: int, m: int) -> Any:
    """Boolean mask keeping the n largest of every m consecutive elements along the last axis.

    Ties go to the lower index, so the mask is deterministic. ``scores`` is any real array of
    rank >= 1 whose last axis is a multiple of m; NaN scores raise ValueError. The mask comes back
    in the caller's framework (numpy or torch) with the shape of ``scores``."""
    p = _pattern(n, m)
    scores = as_array(scores, "scores")
    if len(scores.shape) == 0:
        raise ValueError("scores must have at least one dimension")
    shape = tuple(scores.shape)
    flat = scores_f32(scores, shape).reshape(-1, shape[-1]) if len(shape) != 2 else scores_f32(scores, shape)
    mask = empty(flat.shape, "uint8", flat)
    _C.nm_mask(flat, p.n, p.m, mask)
    mask = mask.reshape(shape)
    return mask.bool() if is_torch(mask) else mask.astype(bool)


@dataclass(frozen=True, eq=False)
class NMTensor:
    """An [R, K] matrix stored N:M-compressed.

    values:  [R, K·n/m], the weight's dtype; the kept elements of each group in ascending position.
    indices: [R, K·n/m], uint8; the position (0..m-1) of each value inside its group of m.

    The values may be edited in place (the kernels read them as they are). The indices should not
    be: the products check them at first use and cache a table derived from them (bit masks; for
    1:2 and 2:4, the positions in 2 bits). hinm's own numpy indices are read-only, and torch
    indices are followed through their version counter (checked again, table rebuilt). Writeable
    numpy indices given here are checked once per array and nothing derived from them is kept:
    small-batch products rebuild the masks at every call, or read the byte positions of 1:2 and
    2:4 (slower either way)."""

    values: Any
    indices: Any
    shape: Tuple[int, int]
    n: int
    m: int

    @property
    def config(self) -> NMConfig:
        return NMConfig(self.n, self.m)

    @property
    def dtype(self) -> str:
        return dtype_name(self.values)

    @property
    def density(self) -> float:
        return self.n / self.m

    @property
    def nbytes(self) -> int:
        return int(self.values.nbytes + self.indices.nbytes)

    def validate(self) -> None:
        """Raises ValueError unless every invariant of the container holds."""
        r, k = self.shape
        _pattern(self.n, self.m)
        if k % self.m:
            raise ValueError(f"NMTensor: K={k} is not a multiple of m={self.m}")
        kc = k // self.m * self.n
        for name, arr in (("values", self.values), ("indices", self.indices)):
            if tuple(arr.shape) != (r, kc):
                raise ValueError(f"NMTensor: {name} has shape {tuple(arr.shape)}, expected {(r, kc)}")
        require_weight_dtype(self.values, "NMTensor.values")
        if dtype_name(self.indices) != "uint8":
            raise ValueError(f"NMTensor: indices must be uint8, got {dtype_name(self.indices)}")
        _C.validate_nm_positions(contiguous(self.indices), self.n, self.m)

    def to_dense(self) -> Any:
        """The masked dense [R, K] matrix, bit-exact, in the framework of `values`."""
        dense = empty(self.shape, self.dtype, self.values)
        _C.decompress_nm(contiguous(self.values), contiguous(self.indices), self.n, self.m, dense)
        return dense

    def state_dict(self) -> dict:
        return {
            "format_version": int_tensor([NM_FORMAT_VERSION], self.values),
            "shape": int_tensor(self.shape, self.values),
            "pattern": int_tensor([self.n, self.m], self.values),
            "values": self.values,
            "indices": self.indices,
        }

    @classmethod
    def from_state_dict(cls, sd: Mapping[str, Any]) -> "NMTensor":
        kind = "NMTensor"
        (version,) = int_vector(sd, "format_version", kind, 1)
        if version != NM_FORMAT_VERSION:
            raise ValueError(f"NMTensor state dict has format version {version}; this hinm reads {NM_FORMAT_VERSION}")
        r, k = int_vector(sd, "shape", kind, 2)
        n, m = int_vector(sd, "pattern", kind, 2)
        try:
            p = _pattern(n, m)
        except (TypeError, ValueError) as e:
            raise ValueError(f"NMTensor state dict: bad pattern: {e}") from None
        if r < 0 or k < 0 or k % m:
            raise ValueError(f"NMTensor state dict: shape {(r, k)} is invalid for pattern {p}")
        kc = k // m * n
        values = array_field(sd, "values", kind, (r, kc), ("float32", "float16", "bfloat16", "int8"))
        indices = frozen(array_field(sd, "indices", kind, (r, kc), ("uint8",)))  # read-only copy if writeable numpy
        t = cls(values, indices, (r, k), n, m)
        t.validate()
        return t

    def __repr__(self) -> str:
        return f"NMTensor(shape={self.shape}, pattern={self.n}:{self.m}, dtype={self.dtype})"


def compress_nm(weight: Any, n: int, m: int, scores: Optional[Any] = None) -> NMTensor:
    """Compress a 2-D weight [R, K] to N:M, keeping in every group of m consecutive elements of a
    row the n with the largest score (|weight| by default; ties to the lower index).

    weight: float32, float16, bfloat16 or int8 (numpy or torch); K must be a multiple of m."""
    p = _pattern(n, m)
    weight = as_array(weight, "weight")
    require_2d(weight, "weight")
    require_weight_dtype(weight, "weight")
    r, k = (int(s) for s in weight.shape)
    if k % p.m:
        raise ValueError(f"weight.shape[1]={k} is not a multiple of m={p.m} for the {p} pattern")
    weight = contiguous(weight)
    s = None if scores is None else scores_f32(scores, (r, k))
    kc = k // p.m * p.n
    values = empty((r, kc), dtype_name(weight), weight)
    indices = empty((r, kc), "uint8", weight)
    _C.compress_nm(weight, s, p.n, p.m, values, indices)
    return NMTensor(values, freeze(indices), (r, k), p.n, p.m)
