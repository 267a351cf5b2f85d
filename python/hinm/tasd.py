"""TASD: any tensor as a short series of structured N:M terms (arXiv 2403.07953).

``hinm.tasd(w, "2:4+1:8")`` takes the top 2:4 of ``w`` (by |value| or given scores), subtracts it,
takes the top 1:8 of the residual, and so on. Each term is an `NMTensor` (a `HiNMTensor` may be the
first term once the HiNM format is available), so each runs on an N:M engine, and by
distributivity ``x·Wᵀ = Σ x·Wᵢᵀ``. TASD-A does the same to an activation at run time (per row,
along K) and uses it as the sparse operand: ``X·Wᵀ = Σ Xᵢ·Wᵀ``.

Greedy terms with the same m collapse (1:8 + 1:8 is exactly 2:8), so useful series mix block
sizes (2:4 + 1:8) or build densities an engine lacks (2:4 + 1:4 = 3:4 on a {1:4, 2:4} engine)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from . import _C
from ._arrays import (as_array, contiguous, dtype_name, empty, freeze, is_torch, require_2d,
                      require_weight_dtype, scores_f32, to_numpy)
from ._state import int_tensor, int_vector
from .nm import NMTensor
from .pattern import Config, HiNMConfig, NMConfig, parse_config

TASD_FORMAT_VERSION = 1
_KIND_NM, _KIND_HINM = 0, 1

SeriesLike = Union[str, Config, Sequence[Union[str, Config]]]


def parse_series(series: SeriesLike) -> Tuple[Config, ...]:
    """The terms of a series given as ``"2:4+1:8"``, one config, or a list of configs/strings.
    Only the first term may be a HiNMConfig."""
    if isinstance(series, str):
        parts = series.split("+")
        if any(not p.strip() for p in parts):
            raise ValueError(f"cannot parse TASD series {series!r}: empty term (expected e.g. '2:4+1:8')")
        items: Sequence[Union[str, Config]] = parts
    elif isinstance(series, (NMConfig, HiNMConfig)):
        items = [series]
    elif isinstance(series, (list, tuple)):
        items = series
    else:
        raise TypeError(f"TASD series must be a string like '2:4+1:8' or a list of NMConfig, got {type(series).__name__}")
    if not items:
        raise ValueError("TASD series needs at least one term")
    configs = []
    for i, item in enumerate(items):
        try:
            cfg = parse_config(item.strip() if isinstance(item, str) else item)
        except (TypeError, ValueError) as e:
            raise type(e)(f"TASD series {series_string(items)!r}, term {i}: {e}") from None
        if isinstance(cfg, HiNMConfig) and i > 0:
            raise ValueError(f"TASD series: a HiNM config may only be the first term (term {i} is {cfg})")
        configs.append(cfg)
    return tuple(configs)


def series_string(series: Iterable[Union[str, Config]]) -> str:
    return "+".join(str(c).strip() for c in series)


def series_density(series: SeriesLike) -> float:
    """Compute (MAC) density of a series: the sum of its terms' densities."""
    return float(sum(c.density for c in parse_series(series)))


def check_series_k(configs: Sequence[Config], k: int, what: str = "K") -> None:
    """Raises ValueError unless k is a multiple of every m of the series."""
    for i, c in enumerate(configs):
        if k % c.m:
            raise ValueError(f"{what}={k} is not a multiple of m={c.m} (term {i}, {c}) of TASD series "
                             f"{series_string(configs)!r}")


@dataclass(frozen=True, eq=False)
class TASDSeries:
    """An [R, K] tensor as a sum of structured terms (NMTensor, or a HiNMTensor first)."""

    terms: Tuple[Any, ...]
    shape: Tuple[int, int]

    @property
    def configs(self) -> Tuple[Config, ...]:
        return tuple(t.config for t in self.terms)

    @property
    def series(self) -> str:
        return series_string(self.configs)

    @property
    def density(self) -> float:
        """Compute density: the sum of the terms' densities (MACs relative to a dense GEMM)."""
        return float(sum(float(t.density) for t in self.terms))

    @property
    def dtype(self) -> str:
        return self.terms[0].dtype

    def __len__(self) -> int:
        return len(self.terms)

    def __iter__(self):
        return iter(self.terms)

    def to_dense(self) -> Any:
        """Σ terms as a dense [R, K] array in the terms' framework and dtype (the terms are
        disjoint, so the sum is exact)."""
        out = self.terms[0].to_dense()
        for t in self.terms[1:]:
            out += t.to_dense()
        return out

    def error(self, reference: Any) -> float:
        """Relative Frobenius error ‖reference − Σ terms‖ / ‖reference‖ (0 for an exact zero)."""
        ref = to_numpy(as_array(reference, "reference"))
        if tuple(ref.shape) != tuple(self.shape):
            raise ValueError(f"reference has shape {tuple(ref.shape)}, the series has shape {self.shape}")
        ref = _as_f64(reference)
        approx = _as_f64(self.to_dense())
        norm = float(np.linalg.norm(ref))
        diff = float(np.linalg.norm(ref - approx))
        if norm == 0.0:
            return 0.0 if diff == 0.0 else float("inf")
        return diff / norm

    def validate(self) -> None:
        if not self.terms:
            raise ValueError("TASDSeries has no terms")
        for i, t in enumerate(self.terms):
            if tuple(t.shape) != tuple(self.shape):
                raise ValueError(f"TASDSeries: term {i} has shape {tuple(t.shape)}, expected {self.shape}")
            if i > 0 and not isinstance(t, NMTensor):
                raise ValueError(f"TASDSeries: term {i} must be an NMTensor, got {type(t).__name__}")
            t.validate()

    def state_dict(self) -> dict:
        """Flat dict of arrays (safetensors-ready): 'format_version', 'shape', 'kinds' and each
        term's state dict under 'term{i}.'."""
        like = self.terms[0].values if hasattr(self.terms[0], "values") else None
        sd = {
            "format_version": int_tensor([TASD_FORMAT_VERSION], like),
            "shape": int_tensor(self.shape, like),
            "kinds": int_tensor([_KIND_NM if isinstance(t, NMTensor) else _KIND_HINM for t in self.terms], like),
        }
        for i, t in enumerate(self.terms):
            for key, val in t.state_dict().items():
                sd[f"term{i}.{key}"] = val
        return sd

    @classmethod
    def from_state_dict(cls, sd: Mapping[str, Any]) -> "TASDSeries":
        kind = "TASDSeries"
        (version,) = int_vector(sd, "format_version", kind, 1)
        if version != TASD_FORMAT_VERSION:
            raise ValueError(f"TASDSeries state dict has format version {version}; this hinm reads "
                             f"{TASD_FORMAT_VERSION}")
        shape = tuple(int_vector(sd, "shape", kind, 2))
        kinds_arr = to_numpy(as_array(sd["kinds"], "kinds")).reshape(-1) if "kinds" in sd else None
        if kinds_arr is None or kinds_arr.size == 0:
            raise ValueError("TASDSeries state dict is missing 'kinds' (one entry per term)")
        terms = []
        for i, k in enumerate(int_vector(sd, "kinds", kind, int(kinds_arr.size))):
            prefix = f"term{i}."
            sub = {key[len(prefix):]: val for key, val in sd.items() if key.startswith(prefix)}
            if k == _KIND_NM:
                terms.append(NMTensor.from_state_dict(sub))
            elif k == _KIND_HINM and i == 0:
                terms.append(_hinm_tensor_type().from_state_dict(sub))
            else:
                raise ValueError(f"TASDSeries state dict: term {i} has unknown kind {k}")
        s = cls(tuple(terms), shape)
        s.validate()
        return s

    def __repr__(self) -> str:
        return f"TASDSeries(shape={self.shape}, series={self.series}, density={self.density:.4g}, dtype={self.dtype})"


def _as_f64(x: Any) -> np.ndarray:
    if is_torch(x):
        return x.detach().double().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _hinm_tensor_type():
    try:
        from .hinm_format import HiNMTensor  # provided by the HiNM format work
    except ImportError:
        raise RuntimeError("HiNM terms need hinm.hinm_format (HiNMTensor), which this build lacks") from None
    return HiNMTensor


def _hinm_first_term(tensor: Any, cfg: HiNMConfig, scores: Optional[Any]) -> Any:
    try:
        from .hinm_format import compress  # provided by the HiNM format work
    except ImportError:
        raise RuntimeError("a HiNM first term needs hinm.compress (hinm.hinm_format), which this build lacks") from None
    return compress(tensor, cfg, scores=scores)


def tasd(tensor: Any, series: SeriesLike, scores: Optional[Any] = None, threshold: float = 0.0) -> TASDSeries:
    """Greedy TASD of a 2-D tensor [R, K] along K.

    series: ``"2:4+1:8"``, an NMConfig, or a list of NMConfig/strings (a HiNMConfig may be the first
    term). scores: optional saliency [R, K] (default |tensor|); elements taken by a term are never
    preferred again. threshold: elements with |value| < threshold count as zero before extraction
    (TASD-A's pseudo-density). K must be a multiple of every m of the series."""
    configs = parse_series(series)
    tensor = as_array(tensor, "tensor")
    require_2d(tensor, "tensor")
    require_weight_dtype(tensor, "tensor")
    threshold = float(threshold)
    if not np.isfinite(threshold) or threshold < 0:
        raise ValueError(f"threshold must be finite and >= 0, got {threshold}")
    r, k = (int(s) for s in tensor.shape)
    check_series_k([c for c in configs if isinstance(c, NMConfig)], k, "tensor.shape[1]")
    tensor = contiguous(tensor)
    s = None if scores is None else scores_f32(scores, (r, k))
    head: list = []
    if isinstance(configs[0], HiNMConfig):
        head = [_hinm_first_term(tensor, configs[0], s)]
        tensor, s = _residual_after(tensor, s, head[0])
        configs = configs[1:]
    terms = []
    if configs:
        values = [empty((r, k // c.m * c.n), dtype_name(tensor), tensor) for c in configs]
        indices = [empty((r, k // c.m * c.n), "uint8", tensor) for c in configs]
        _C.tasd_decompose(tensor, s, [c.n for c in configs], [c.m for c in configs], values, indices, threshold)
        terms = [NMTensor(v, freeze(i), (r, k), c.n, c.m) for v, i, c in zip(values, indices, configs)]
    return TASDSeries(tuple(head + terms), (r, k))


def _residual_after(tensor: Any, scores: Optional[Any], first: Any) -> Tuple[Any, Any]:
    """Residual and scores after a HiNM first term: taken elements become 0 and score -inf."""
    from .hinm_format import hinm_mask

    base_scores = scores if scores is not None else (tensor.float().abs() if is_torch(tensor)
                                                     else np.abs(tensor.astype(np.float32)))
    taken, _ = hinm_mask(base_scores, first.config)  # exactly the elements compress() kept
    if is_torch(tensor):
        import torch

        base = tensor.float().abs() if scores is None else scores.float()
        res = torch.where(taken, torch.zeros_like(tensor), tensor)
        sc = torch.where(taken, torch.full_like(base, float("-inf")), base)
        return res.contiguous(), sc.contiguous()
    base = np.abs(tensor.astype(np.float32)) if scores is None else np.asarray(scores, np.float32)
    res = np.where(taken, np.zeros_like(tensor), tensor)
    sc = np.where(taken, np.float32(-np.inf), base).astype(np.float32)
    return np.ascontiguousarray(res), np.ascontiguousarray(sc)


def tasd_activation(x: Any, series: SeriesLike, threshold: float = 0.0) -> TASDSeries:
    """TASD-A: decompose an activation [..., K] along K, per row (rows = all leading axes
    flattened), at run time. Elements with |x| < threshold count as zero (pseudo-density for
    GELU-like layers). Only plain N:M terms."""
    configs = parse_series(series)
    if any(isinstance(c, HiNMConfig) for c in configs):
        raise ValueError("TASD-A terms must be plain N:M (a HiNM term is a weight format)")
    x = as_array(x, "x")
    if len(x.shape) < 1:
        raise ValueError("x must have at least one dimension")
    k = int(x.shape[-1])
    return tasd(x.reshape(-1, k), configs, threshold=threshold)


def pseudo_density(x: Any, threshold: float) -> float:
    """Fraction of activation elements with |x| >= threshold (the density TASD-A has to cover)."""
    a = _as_f64(as_array(x, "x"))
    return float(np.mean(np.abs(a) >= threshold)) if a.size else 0.0


# --- GEMMs over a series: every term accumulates into one output buffer ---------------------------

def _matmul_into(a: Any, b: Any, out: Any, accumulate: bool) -> None:
    """out (+)= a @ b without allocating the product when the framework allows it."""
    if is_torch(out):
        import torch

        if accumulate:
            torch.addmm(out, a.to(out.dtype), b.to(out.dtype), out=out)
        else:
            torch.mm(a.to(out.dtype), b.to(out.dtype), out=out)
        return
    prod = np.asarray(a, dtype=out.dtype) @ np.asarray(b, dtype=out.dtype)
    if accumulate:
        out += prod
    else:
        out[...] = prod


def _f32(*arrays: Any) -> bool:
    return all(dtype_name(a) == "float32" for a in arrays)


def _accumulate_weight_term(x2: Any, term: Any, out: Any, accumulate: bool, bias: Optional[Any] = None) -> None:
    """out (+)= x2 · termᵀ (+ bias) with the N:M / HiNM GEMM (hinm.ops.linear)."""
    if _f32(x2, out) and (bias is None or _f32(bias)):
        from .ops import linear

        linear(x2, term, bias=bias, out=out, accumulate=accumulate)
        return
    _matmul_into(x2, term.to_dense().T, out, accumulate)  # dtypes the GEMM lacks: dense reference
    if bias is not None:
        out += bias


def _accumulate_activation_term(term: NMTensor, wt: Any, out: Any, accumulate: bool) -> None:
    """out (+)= term · wt with the decomposed activation as the sparse operand (hinm.ops.spmm)."""
    if _f32(term.values, wt, out):
        from .ops import spmm

        spmm(term, wt, out=out, accumulate=accumulate)
        return
    _matmul_into(term.to_dense(), wt, out, accumulate)


def _output(x: Any, rows: int, cols: int, out: Optional[Any]) -> Any:
    dt = "float32" if dtype_name(x) in ("int8",) else dtype_name(x)
    if out is None:
        return empty((rows, cols), dt, x)
    if tuple(out.shape) != (rows, cols):
        raise ValueError(f"out must have shape {(rows, cols)}, got {tuple(out.shape)}")
    return out


def tasd_linear(x: Any, weight: TASDSeries, bias: Optional[Any] = None, out: Optional[Any] = None,
                accumulate: bool = False) -> Any:
    """y = x · Wᵀ + bias with W a TASDSeries [out_features, K]: each term runs as one N:M (or HiNM)
    GEMM accumulating into the same output buffer, no temporaries per term. x: [..., K]; returns
    [..., out_features]. accumulate=True adds the result to out. Also reached as
    hinm.linear(x, series, bias)."""
    x = as_array(x, "x")
    r_out, k = weight.shape
    if len(x.shape) < 1 or int(x.shape[-1]) != k:
        raise ValueError(f"x has shape {tuple(x.shape)}; the TASD weight expects a last axis of {k}")
    if accumulate and out is None:
        raise ValueError("accumulate=True needs an out= buffer to add into")
    lead = tuple(x.shape[:-1])
    x2 = contiguous(x.reshape(-1, k))
    y = _output(x2, x2.shape[0], r_out, None if out is None else out.reshape(-1, r_out))
    for i, term in enumerate(weight.terms):
        _accumulate_weight_term(x2, term, y, accumulate=accumulate or i > 0, bias=bias if i == 0 else None)
    return y.reshape(lead + (r_out,))


def tasd_activation_linear(x: Any, weight: Any, series: SeriesLike, bias: Optional[Any] = None,
                           threshold: float = 0.0, out: Optional[Any] = None) -> Any:
    """TASD-A: y = Σᵢ Xᵢ · Wᵀ + bias, the activation x [..., K] decomposed at run time along K
    (Xᵢ N:M, the sparse operand) and W [out_features, K] dense. Equals x_approx · Wᵀ + bias with
    x_approx = tasd_activation(x, series, threshold).to_dense()."""
    x = as_array(x, "x")
    weight = as_array(weight, "weight")
    require_2d(weight, "weight")
    r_out, k = (int(s) for s in weight.shape)
    if len(x.shape) < 1 or int(x.shape[-1]) != k:
        raise ValueError(f"x has shape {tuple(x.shape)}; weight {tuple(weight.shape)} expects a last axis of {k}")
    lead = tuple(x.shape[:-1])
    xs = tasd_activation(x, series, threshold)
    wt = contiguous(weight.T)
    y = _output(x, xs.shape[0], r_out, None if out is None else out.reshape(-1, r_out))
    for i, term in enumerate(xs.terms):
        _accumulate_activation_term(term, wt, y, accumulate=i > 0)
    if bias is not None:
        y += bias
    return y.reshape(lead + (r_out,))
