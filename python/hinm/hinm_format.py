"""Hierarchical N:M (HiNM): masks, retained saliency and the compressed `HiNMTensor`.

A weight W [R, K] is cut into T = ceil(R / v) tiles of v row slots (slot s holds original row
row_perm[s]). Each tile keeps Kt = config.kept_columns(K) columns, listed in col_idx[t] in the
tile's order (the input-channel permutation); along each row, consecutive groups of m kept columns
hold n values. When R is not a multiple of v, the last tile is padded with zero rows internally:
the padding costs storage but never appears in `to_dense()` or in GEMM outputs (padding slots hold
zero values and positions 0..n-1 in every group, so their metadata stays legal)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional, Tuple, Union

import numpy as np

from . import _C
from ._arrays import (as_array, contiguous, dtype_name, empty, freeze, from_numpy, frozen, is_cuda, is_torch,
                      require_2d, require_weight_dtype, scores_f32, to_numpy)
from ._state import array_field, int_tensor, int_vector
from .nm import NMTensor, compress_nm
from .pattern import HiNMConfig, NMConfig, parse_config
from .sptc import sptc_metadata_from_positions

HINM_FORMAT_VERSION = 1
_WEIGHT_DTYPES = ("float32", "float16", "bfloat16", "int8")
# Patterns sparse tensor cores run, and the (rows, kept columns) multiples their metadata needs.
_SPTC_RULES = {("float16", 2, 4): (32, 32), ("bfloat16", 2, 4): (32, 32), ("int8", 2, 4): (16, 64),
               ("float32", 1, 2): (32, 16)}


def _sptc_meta(indices: Any, dtype: str, n: int, m: int, kept: int) -> Any:
    """Lane-layout metadata words (see hinm.sptc) of a HiNM container whose pattern and shape sparse
    tensor cores run (2:4 for f16/bf16/int8, 1:2 for f32; slots and Kt in the required multiples),
    else None. The words depend only on each slot row's positions, so tiles need no special case."""
    rule = _SPTC_RULES.get((dtype, n, m))
    slots = int(indices.shape[0])
    if rule is None or slots == 0 or slots % rule[0] or kept % rule[1]:
        return None
    return sptc_metadata_from_positions(indices, dtype, kept, layout="lanes")


def _index_array(x: Any, name: str, shape: Tuple[int, ...]) -> np.ndarray:
    """An int64 numpy copy of a permutation-like input, shape-checked (checked for validity in C++)."""
    a = to_numpy(as_array(x, name))
    if a.size and not np.issubdtype(a.dtype, np.integer):
        raise TypeError(f"{name} must hold integers, got {a.dtype}")
    if a.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {a.shape}")
    return np.ascontiguousarray(a, dtype=np.int64)


def _perm_arrays(perm: Any, rows: int, cols: int, tiles: int) -> Tuple[Optional[np.ndarray], Optional[np.ndarray]]:
    """(row_perm [R], col_order [T, K]) from a PermutationResult-like object or a dict."""
    if perm is None:
        return None, None
    get = perm.get if isinstance(perm, Mapping) else (lambda k, d=None: getattr(perm, k, d))
    row_perm, col_orders, col_perm = get("row_perm"), get("col_orders"), get("col_perm")
    if col_orders is None and col_perm is not None:
        col_orders = np.broadcast_to(to_numpy(as_array(col_perm, "col_perm")).reshape(1, -1), (tiles, cols))
    rp = None if row_perm is None else _index_array(row_perm, "row_perm", (rows,))
    co = None if col_orders is None else _index_array(col_orders, "col_orders", (tiles, cols))
    return rp, co


def _resolve_hinm(config: Union[str, HiNMConfig, NMConfig], cols: int, rows: int = -1) -> Tuple[HiNMConfig, int]:
    """(HiNMConfig, Kt). A plain N:M config (allowed when rows >= 0) is one tile of all rows keeping
    every column."""
    cfg = parse_config(config)
    if isinstance(cfg, NMConfig) and rows >= 0:
        if cols % cfg.m:
            raise ValueError(f"K={cols} is not a multiple of m={cfg.m} for the {cfg} pattern")
        cfg = HiNMConfig(v=max(rows, 1), vec_density=1.0, n=cfg.n, m=cfg.m)
    if not isinstance(cfg, HiNMConfig):
        raise TypeError(f"expected a HiNM config, got {cfg}")
    return cfg, cfg.kept_columns(cols)


def hinm_mask(scores: Any, config: Union[str, HiNMConfig], row_perm: Any = None, col_order: Any = None):
    """The HiNM keep mask of `scores` [R, K].

    Tile t holds the original rows row_perm[t·v:(t+1)·v] (identity by default); it keeps the Kt
    columns with the largest summed score (ties: lower column index), taken in the order of
    col_order[t] (a permutation of range(K); ascending by default); then n:m along each row over
    consecutive groups of m kept columns (ties: lower position).

    A single [K] col_order applies to every tile. A plain N:M config ('2:4') is one tile of all rows
    keeping every column (K must be a multiple of m). NaN scores, or row_perm / col_order that are
    not permutations, raise ValueError.

    Returns (mask, kept): a boolean [R, K] mask in original coordinates (caller's framework) and the
    kept columns [T, Kt] (int32) in each tile's order."""
    scores = as_array(scores, "scores")
    require_2d(scores, "scores")
    r, k = (int(s) for s in scores.shape)
    cfg, kt = _resolve_hinm(config, k, r)
    tiles = -(-r // cfg.v)
    single = col_order is not None and len(as_array(col_order, "col_order").shape) == 1
    rp, co = _perm_arrays({"row_perm": row_perm, "col_perm" if single else "col_orders": col_order}, r, k, tiles)
    s = scores_f32(scores.cpu() if is_cuda(scores) else scores, (r, k))
    mask = empty((r, k), "uint8", s)
    kept = empty((tiles, kt), "int32", s)
    _C.hinm_mask(s, cfg.v, kt, cfg.n, cfg.m, rp, co, mask, kept)
    return (mask.bool() if is_torch(mask) else mask.astype(bool)), kept


def retained_saliency(scores: Any, mask: Any) -> float:
    """Kept score / total score: the quality measure every search reports (1.0 for all-zero scores).
    Sums are float64; NaN scores raise ValueError."""
    scores = as_array(scores, "scores")
    if is_torch(scores) and dtype_name(scores) == "bfloat16":  # to_numpy would give the raw bits
        scores = scores.float()
    s = to_numpy(scores)
    k = to_numpy(as_array(mask, "mask")).astype(bool, copy=False)
    if s.shape != k.shape:
        raise ValueError(f"scores {s.shape} and mask {k.shape} differ in shape")
    if not (np.issubdtype(s.dtype, np.floating) or np.issubdtype(s.dtype, np.integer)):
        raise TypeError(f"scores: dtype {s.dtype} is not numeric")
    total = float(np.sum(s, dtype=np.float64))
    if np.isnan(total):
        raise ValueError("scores contain NaN")
    return float(np.sum(s, where=k, dtype=np.float64)) / total if total != 0 else 1.0


@dataclass(frozen=True, eq=False)
class HiNMTensor:
    """An [R, K] matrix stored in the HiNM format (see the module docstring).

    values [T·v, Kt·n/m] (weight dtype), indices [T·v, Kt·n/m] (uint8 in-group positions),
    col_idx [T, Kt] (int32), row_perm [R] (int64; identity when no permutation was given).
    sptc_meta: sparse-tensor-core metadata of (values, indices) in the `hinm.sptc` "lanes" layout
    (uint32 [words/32, 32]) when the pattern and shape allow it (2:4 for float16/bfloat16/int8, 1:2
    for float32; T·v a multiple of 32 (int8: 16) and Kt of 32 (float32: 16, int8: 64)), else None.
    As in NMTensor, the values may be edited in place and the indices should not be (hinm's own
    numpy indices are read-only); products check the indices and col_idx at first use and after
    visible edits."""

    values: Any
    indices: Any
    col_idx: Any
    row_perm: Any
    shape: Tuple[int, int]
    config: HiNMConfig
    sptc_meta: Any = None

    @property
    def v(self) -> int:
        return self.config.v

    @property
    def n(self) -> int:
        return self.config.n

    @property
    def m(self) -> int:
        return self.config.m

    @property
    def kept_columns(self) -> int:
        return int(self.col_idx.shape[1])

    @property
    def tiles(self) -> int:
        return int(self.col_idx.shape[0])

    @property
    def dtype(self) -> str:
        return dtype_name(self.values)

    @property
    def density(self) -> float:
        r, k = self.shape
        return self.kept_columns * self.n / self.m / k if k else 0.0

    @property
    def nbytes(self) -> int:
        fields = (self.values, self.indices, self.col_idx, self.row_perm, self.sptc_meta)
        return int(sum(a.nbytes for a in fields if a is not None))

    def _c_args(self):
        r, k = self.shape

        def cpu(a):  # the C++ core reads host memory; GPU-resident fields are copied for it
            return contiguous(a.cpu() if is_cuda(a) else a)

        return (cpu(self.values), cpu(self.indices), cpu(self.col_idx), cpu(self.row_perm), r, k, self.v,
                self.kept_columns, self.n, self.m)

    def validate(self) -> None:
        """Raises ValueError unless every invariant holds (shapes, dtypes, index ranges, distinct
        columns per tile, row_perm a permutation, positions legal, padding zero)."""
        if not isinstance(self.config, HiNMConfig):
            raise ValueError(f"HiNMTensor: config must be a HiNMConfig, got {type(self.config).__name__}")
        if (len(self.shape) != 2 or any(isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 0
                                        for d in self.shape)):
            raise ValueError(f"HiNMTensor: shape must be two non-negative integers, got {self.shape!r}")
        for name in ("values", "indices", "col_idx", "row_perm"):
            if not hasattr(getattr(self, name), "shape"):
                raise ValueError(f"HiNMTensor: {name} must be an array, got {type(getattr(self, name)).__name__}")
        if self.sptc_meta is not None and not hasattr(self.sptc_meta, "shape"):
            raise ValueError(f"HiNMTensor: sptc_meta must be an array, got {type(self.sptc_meta).__name__}")
        r, k = (int(d) for d in self.shape)
        try:
            tiles, kt = -(-r // self.v), self.config.kept_columns(k)
        except ValueError as e:
            raise ValueError(f"HiNMTensor: {e}") from None
        expect = {"values": (tiles * self.v, kt * self.n // self.m), "indices": (tiles * self.v, kt * self.n // self.m),
                  "col_idx": (tiles, kt), "row_perm": (r,)}
        for name, shape in expect.items():
            got = tuple(getattr(self, name).shape)
            if got != shape:
                raise ValueError(f"HiNMTensor: {name} has shape {got}, expected {shape}")
        for name, dt in (("indices", "uint8"), ("col_idx", "int32"), ("row_perm", "int64")):
            if dtype_name(getattr(self, name)) != dt:
                raise ValueError(f"HiNMTensor: {name} must be {dt}, got {dtype_name(getattr(self, name))}")
        if self.dtype not in _WEIGHT_DTYPES:
            raise ValueError(f"HiNMTensor: values dtype {self.dtype} is not supported")
        args = self._c_args()
        _C.hinm_validate(*args)
        if self.sptc_meta is not None:
            expect = _sptc_meta(args[1], self.dtype, self.n, self.m, kt)
            if expect is None:
                raise ValueError(f"HiNMTensor: sptc_meta is set, but {self.config} with {self.dtype} values of "
                                 f"shape {tuple(self.values.shape)} has no sparse-tensor-core metadata")
            got = to_numpy(self.sptc_meta.cpu() if is_cuda(self.sptc_meta) else self.sptc_meta)
            if got.shape != tuple(expect.shape) or dtype_name(got) != "uint32":
                raise ValueError(f"HiNMTensor: sptc_meta must be uint32 {tuple(expect.shape)}, got "
                                 f"{dtype_name(got)} {got.shape}")
            bad = np.flatnonzero(got.reshape(-1) != to_numpy(expect).reshape(-1))
            if bad.size:
                raise ValueError(f"HiNMTensor: sptc_meta word {int(bad[0])} does not match the positions")

    def to_dense(self) -> Any:
        """The masked weight [R, K] in original coordinates, bit-exact, in the framework (and device)
        of `values`. A corrupted container raises ValueError."""
        args = self._c_args()
        dense = empty(self.shape, self.dtype, args[0])
        _C.hinm_decompress(*args, dense)
        return dense.to(self.values.device) if is_cuda(self.values) else dense

    def state_dict(self) -> dict:
        c = self.config
        return {
            "format_version": int_tensor([HINM_FORMAT_VERSION], self.values),
            "shape": int_tensor(self.shape, self.values),
            "pattern": int_tensor([c.v, c.n, c.m], self.values),
            "vec_density": from_numpy(np.asarray([c.vec_density], dtype=np.float64), self.values),
            "values": self.values,
            "indices": self.indices,
            "col_idx": self.col_idx,
            "row_perm": self.row_perm,
            **({} if self.sptc_meta is None else {"sptc_meta": self.sptc_meta}),
        }

    @classmethod
    def from_state_dict(cls, sd: Mapping[str, Any]) -> "HiNMTensor":
        kind = "HiNMTensor"
        (version,) = int_vector(sd, "format_version", kind, 1)
        if version != HINM_FORMAT_VERSION:
            raise ValueError(f"HiNMTensor state dict has format version {version}; this hinm reads {HINM_FORMAT_VERSION}")
        r, k = int_vector(sd, "shape", kind, 2)
        v, n, m = int_vector(sd, "pattern", kind, 3)
        vd = to_numpy(as_array(sd.get("vec_density"), "vec_density")).reshape(-1) if "vec_density" in sd else None
        if vd is None or vd.shape != (1,) or not np.issubdtype(vd.dtype, np.floating):
            raise ValueError("HiNMTensor state dict: 'vec_density' must hold one float")
        try:
            cfg = HiNMConfig(v, float(vd[0]), n, m)
            kt = cfg.kept_columns(k) if r >= 0 and k > 0 else -1
        except (TypeError, ValueError) as e:
            raise ValueError(f"HiNMTensor state dict: bad config: {e}") from None
        if r < 0 or kt < 0:
            raise ValueError(f"HiNMTensor state dict: invalid shape {(r, k)}")
        tiles = -(-r // v)
        kc = kt // m * n
        t = cls(array_field(sd, "values", kind, (tiles * v, kc), _WEIGHT_DTYPES),
                frozen(array_field(sd, "indices", kind, (tiles * v, kc), ("uint8",))),  # see NMTensor
                array_field(sd, "col_idx", kind, (tiles, kt), ("int32",)),
                array_field(sd, "row_perm", kind, (r,), ("int64",)), (r, k), cfg,
                None if sd.get("sptc_meta") is None else as_array(sd["sptc_meta"], "sptc_meta"))
        try:
            t.validate()
        except ValueError as e:
            raise ValueError(f"HiNMTensor state dict is inconsistent: {e}") from None
        return t

    def __repr__(self) -> str:
        return f"HiNMTensor(shape={self.shape}, config={self.config}, dtype={self.dtype}, tiles={self.tiles})"


def compress(weight: Any, config: Union[str, NMConfig, HiNMConfig], perm: Any = None,
             scores: Optional[Any] = None) -> Union[HiNMTensor, NMTensor]:
    """Compress a 2-D weight [R, K] (float32, float16, bfloat16, int8; numpy or torch).

    config: a HiNMConfig (or 'hinm:v64:0.5:2:4') gives a HiNMTensor; an NMConfig (or '2:4') gives an
    NMTensor, or — when `perm` carries a column permutation — a single-tile HiNMTensor that applies it.
    perm: a PermutationResult (row_perm, col_orders / col_perm) or a dict with those keys.
    scores: saliency [R, K] deciding what is kept (|weight| by default)."""
    cfg = parse_config(config)
    weight = as_array(weight, "weight")
    require_2d(weight, "weight")
    require_weight_dtype(weight, "weight")
    r, k = (int(s) for s in weight.shape)
    if isinstance(cfg, NMConfig):
        if perm is None:
            return compress_nm(weight, cfg.n, cfg.m, scores=scores)
        if k % cfg.m:
            raise ValueError(f"weight.shape[1]={k} is not a multiple of m={cfg.m} for the {cfg} pattern")
        cfg = HiNMConfig(v=max(r, 1), vec_density=1.0, n=cfg.n, m=cfg.m)
    cfg, kt = _resolve_hinm(cfg, k)
    tiles = -(-r // cfg.v)
    rp, co = _perm_arrays(perm, r, k, tiles)
    device = weight.device if is_cuda(weight) else None  # compressed on the host, fields moved back
    weight = contiguous(weight.cpu() if device is not None else weight)
    s = None if scores is None else scores_f32(scores.cpu() if is_cuda(scores) else scores, (r, k))
    kc = kt // cfg.m * cfg.n
    values = empty((tiles * cfg.v, kc), dtype_name(weight), weight)
    indices = empty((tiles * cfg.v, kc), "uint8", weight)
    col_idx = empty((tiles, kt), "int32", weight)
    row_perm = np.arange(r, dtype=np.int64) if rp is None else rp
    _C.hinm_compress(weight, s, cfg.v, kt, cfg.n, cfg.m, row_perm, co, values, indices, col_idx)
    meta = _sptc_meta(indices, dtype_name(weight), cfg.n, cfg.m, kt)
    fields = [values, freeze(indices), col_idx, from_numpy(row_perm, weight), meta]
    if device is not None:
        fields = [None if f is None else f.to(device) for f in fields]
    return HiNMTensor(*fields[:4], (r, k), cfg, fields[4])
