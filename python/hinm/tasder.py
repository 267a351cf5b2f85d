"""TASDER: a per-layer search of TASD series for weights (TASD-W) and activations (TASD-A).

Every nn.Linear of a model may stay dense, have its weight replaced by a TASD series (offline), or
have its input activation decomposed at run time (TASD-A). The search lowers the total compute
(Σ layers: series density × layer MACs) as far as it can while `quality_fn(model)` stays at or
above `target × dense quality`, without any fine-tuning:

1. one calibration pass records each layer's input rows (tokens) and a sample of its inputs;
2. each (layer, menu entry) gets a proxy cost: the relative error of that layer's output on the
   sample, and a saving: (1 − density) × layer MACs;
3. candidates are tried menu level by level, densest first, and within a level in order of saving
   per unit of proxy error (greedy, deterministic); a move is kept if the model still meets the
   target, otherwise undone. A rejected move makes every
   move of the same layer and kind with a larger proxy error skip its (doomed) evaluation.

The result is a `TASDERPlan`: a plain JSON-saveable config that `.apply(model)` swaps in."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .tasd import TASDSeries, parse_series, series_density, tasd, tasd_activation, tasd_activation_linear, tasd_linear

log = logging.getLogger("hinm")

PLAN_VERSION = 1
KINDS = ("dense", "weight", "activation")
DEFAULT_MENU: Dict[str, Tuple[str, ...]] = {
    "weight": ("7:8", "3:4", "2:4+1:8", "4:8+1:16", "2:4", "4:8", "1:4+1:8", "2:8+1:16", "1:4"),
    "activation": ("7:8", "3:4", "2:4+1:8", "4:8+1:16", "2:4", "4:8", "1:4+1:8"),
}


@dataclass(frozen=True)
class LayerPlan:
    """What one nn.Linear runs: kind 'dense', 'weight' (TASD-W series) or 'activation' (TASD-A
    series, with |x| < threshold counted as zero). macs: the layer's dense MACs on the
    calibration data."""

    kind: str = "dense"
    series: str = ""
    threshold: float = 0.0
    macs: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"LayerPlan: kind must be one of {KINDS}, got {self.kind!r}")
        if self.kind != "dense":
            parse_series(self.series)

    @property
    def density(self) -> float:
        return 1.0 if self.kind == "dense" else series_density(self.series)

    @property
    def cost(self) -> float:
        return self.density * self.macs


@dataclass(frozen=True)
class TASDERPlan:
    """A per-layer TASD configuration (module name -> LayerPlan) and the search's figures."""

    layers: Dict[str, LayerPlan]
    target: float = 0.99
    dense_quality: float = 1.0
    quality: float = 1.0
    history: List[dict] = field(default_factory=list, compare=False)

    @property
    def dense_macs(self) -> int:
        return int(sum(p.macs for p in self.layers.values()))

    @property
    def macs(self) -> float:
        return float(sum(p.cost for p in self.layers.values()))

    @property
    def mac_reduction(self) -> float:
        """1 − plan MACs / dense MACs over the searched layers."""
        return 1.0 - self.macs / self.dense_macs if self.dense_macs else 0.0

    def to_json(self, indent: Optional[int] = 1) -> str:
        d = {"version": PLAN_VERSION, "target": self.target, "dense_quality": self.dense_quality,
             "quality": self.quality, "layers": {k: asdict(v) for k, v in self.layers.items()},
             "history": self.history}
        return json.dumps(d, indent=indent)

    @classmethod
    def from_json(cls, text: str) -> "TASDERPlan":
        d = json.loads(text)
        if not isinstance(d, dict) or d.get("version") != PLAN_VERSION:
            raise ValueError(f"not a TASDER plan of version {PLAN_VERSION}")
        try:
            layers = {str(k): LayerPlan(**v) for k, v in d["layers"].items()}
        except (KeyError, TypeError) as e:
            raise ValueError(f"bad TASDER plan: {e}") from None
        return cls(layers, float(d.get("target", 0.99)), float(d.get("dense_quality", 1.0)),
                   float(d.get("quality", 1.0)), list(d.get("history", [])))

    def apply(self, model: Any, mode: str = "kernel") -> Any:
        """Swaps the plan into model (in place; returns it). mode 'kernel': each planned
        nn.Linear becomes a TASD module that runs its terms with the N:M GEMM; 'simulate':
        weights are overwritten by their dense TASD approximation and TASD-A runs as a forward
        pre-hook on the dense layer (same numbers, dense speed)."""
        if mode not in ("kernel", "simulate"):
            raise ValueError(f"mode must be 'kernel' or 'simulate', got {mode!r}")
        if mode == "simulate":
            self.simulate(model)
            return model
        modules = self._modules_of(model)
        for name, lp in self.layers.items():
            if lp.kind != "dense":
                _replace_module(model, name, _tasd_module(modules[name], lp))
        return model

    def simulate(self, model: Any) -> Callable[[], None]:
        """Applies the plan in 'simulate' mode and returns a callable that undoes it."""
        modules = self._modules_of(model)
        undos = [_simulate(modules[n], lp) for n, lp in self.layers.items() if lp.kind != "dense"]

        def undo() -> None:
            for u in reversed(undos):
                u()

        return undo

    def _modules_of(self, model: Any) -> Dict[str, Any]:
        modules = dict(model.named_modules())
        for name in self.layers:
            if name not in modules:
                raise ValueError(f"TASDER plan names layer {name!r}, which the model does not have")
        return modules


# --- modules the plan swaps in --------------------------------------------------------------------

def _torch():
    import torch

    return torch


def _tasd_module(linear: Any, lp: LayerPlan) -> Any:
    torch = _torch()

    class TASDLinear(torch.nn.Module):
        """y = x·Wᵀ + b with W a TASD series (each term one N:M GEMM into one output)."""

        def __init__(self, weight: TASDSeries, bias: Any, in_features: int, out_features: int) -> None:
            super().__init__()
            self.weight_series, self.bias = weight, bias
            self.in_features, self.out_features = in_features, out_features

        def forward(self, x):
            return tasd_linear(x, self.weight_series, self.bias)

        def extra_repr(self) -> str:
            return f"{self.in_features}, {self.out_features}, series={self.weight_series.series}"

    class TASDActivationLinear(torch.nn.Module):
        """y = Σᵢ Xᵢ·Wᵀ + b with X decomposed at run time (TASD-A)."""

        def __init__(self, weight: Any, bias: Any, series: str, threshold: float) -> None:
            super().__init__()
            self.weight, self.bias, self.series, self.threshold = weight, bias, series, threshold
            self.in_features, self.out_features = weight.shape[1], weight.shape[0]

        def forward(self, x):
            return tasd_activation_linear(x, self.weight, self.series, self.bias, self.threshold)

        def extra_repr(self) -> str:
            return f"{self.in_features}, {self.out_features}, activation series={self.series}"

    w = linear.weight.detach()
    b = None if linear.bias is None else linear.bias.detach()
    if lp.kind == "weight":
        return TASDLinear(tasd(w, lp.series), b, linear.in_features, linear.out_features)
    return TASDActivationLinear(w, b, lp.series, lp.threshold)


def _replace_module(model: Any, name: str, new: Any) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def _activation_hook(series: str, threshold: float):
    def hook(module, args):
        x = args[0]
        xd = tasd_activation(x.detach(), series, threshold).to_dense().reshape(x.shape)
        return (xd,) + tuple(args[1:])

    return hook


def _simulate(linear: Any, lp: LayerPlan) -> Any:
    """Applies one LayerPlan to an nn.Linear in place; returns an undo callable."""
    if lp.kind == "weight":
        old = linear.weight.data
        linear.weight.data = tasd(old, lp.series).to_dense()

        def undo():
            linear.weight.data = old

        return undo
    handle = linear.register_forward_pre_hook(_activation_hook(lp.series, lp.threshold))
    return handle.remove


# --- the search -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Candidate:
    layer: str
    kind: str
    series: str
    density: float
    saving: float
    error: float


def _linear_layers(model: Any, layers: Optional[Callable[[str], bool]]) -> Dict[str, Any]:
    torch = _torch()
    found = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    if layers is not None:
        found = {n: m for n, m in found.items() if layers(n)}
    if not found:
        raise ValueError("TASDER: the model has no nn.Linear layers to search (after the layer filter)")
    return found


def _run_calibration(model: Any, calibration: Any) -> None:
    torch = _torch()
    with torch.inference_mode():
        if callable(calibration):
            calibration(model)
        elif isinstance(calibration, (tuple, list)):
            model(*calibration)
        else:
            model(calibration)


def _profile(model: Any, linears: Dict[str, Any], calibration: Any, sample_rows: int) -> Dict[str, Tuple[int, Any]]:
    """Per layer: (input rows seen, an evenly spaced sample of input rows as float32 [s, K])."""
    torch = _torch()
    seen: Dict[str, List[Any]] = {n: [] for n in linears}
    handles = []
    for name, mod in linears.items():
        def hook(module, args, name=name):
            seen[name].append(args[0].detach().reshape(-1, args[0].shape[-1]).float())
        handles.append(mod.register_forward_pre_hook(hook))
    try:
        _run_calibration(model, calibration)
    finally:
        for h in handles:
            h.remove()
    out = {}
    for name, chunks in seen.items():
        if not chunks:
            raise ValueError(f"TASDER: layer {name!r} did not run on the calibration data")
        x = torch.cat(chunks)
        idx = np.linspace(0, x.shape[0] - 1, num=min(sample_rows, x.shape[0])).round().astype(np.int64)
        out[name] = (int(x.shape[0]), x[torch.from_numpy(idx)].contiguous())
    return out


def _candidates(linears, profile, menu, thresholds) -> List[_Candidate]:
    torch = _torch()
    cands = []
    for name, mod in linears.items():
        rows, x = profile[name]
        w = mod.weight.detach().float()
        y = x @ w.T
        ynorm = float(torch.linalg.norm(y)) or 1.0
        macs = rows * mod.in_features * mod.out_features
        for kind in ("weight", "activation"):
            for series in menu.get(kind, ()):
                if any(mod.in_features % c.m for c in parse_series(series)):
                    continue  # K must be a multiple of every m of the series
                if kind == "weight":
                    err = float(torch.linalg.norm(x @ (w - tasd(w, series).to_dense()).T)) / ynorm
                else:
                    xa = tasd_activation(x, series, thresholds[name]).to_dense()
                    err = float(torch.linalg.norm((x - xa) @ w.T)) / ynorm
                d = series_density(series)
                cands.append(_Candidate(name, kind, series, d, (1.0 - d) * macs, err))
    order = {n: i for i, n in enumerate(linears)}
    # Menu levels from the densest down, so that the cheap-to-keep moves on every layer come before
    # deep cuts on a few (which would spend the whole quality budget); within a level, most saving
    # per unit of error first; ties by layer order, kind, then series (deterministic).
    cands.sort(key=lambda c: (-c.density, -c.saving / (c.error + 1e-12), order[c.layer], c.kind, c.series))
    return cands


def _normalise_menu(menu: Optional[Dict[str, Sequence[str]]]) -> Dict[str, Tuple[str, ...]]:
    menu = DEFAULT_MENU if menu is None else menu
    if not isinstance(menu, dict) or not set(menu) <= {"weight", "activation"}:
        raise ValueError("menu must be a dict with keys 'weight' and/or 'activation' mapping to lists of series")
    out = {}
    for kind, entries in menu.items():
        out[kind] = tuple("+".join(str(c) for c in parse_series(s)) for s in entries)
    return out


def tasder(model: Any, calibration: Any, quality_fn: Callable[[Any], float], target: float = 0.99,
           menu: Optional[Dict[str, Sequence[str]]] = None, layers: Optional[Callable[[str], bool]] = None,
           activation_threshold: float = 0.0, sample_rows: int = 256, progress: bool = True,
           start: Optional[TASDERPlan] = None) -> TASDERPlan:
    """Searches per-layer TASD series for a torch model's nn.Linear layers (no fine-tuning).

    calibration: a callable run as calibration(model), or the input(s) of model(...); used once to
    count each layer's rows (for MACs) and sample its inputs (for the proxy order).
    quality_fn(model) -> float, higher is better; the plan keeps it >= target × its dense value.
    menu: {"weight": [...series], "activation": [...series]} (default DEFAULT_MENU).
    layers: optional filter on module names. activation_threshold: TASD-A pseudo-density threshold
    as a fraction of each layer's input RMS (0 = exact zeros only).
    start: an earlier plan to continue from (e.g. the plan of a stricter target), which must meet
    this target; its layers are only ever made cheaper.
    The model is returned unchanged; apply the plan with plan.apply(model)."""
    if not 0.0 < target <= 1.0:
        raise ValueError(f"target must be in (0, 1], got {target}")
    menu_n = _normalise_menu(menu)
    torch = _torch()
    from tqdm.auto import tqdm

    linears = _linear_layers(model, layers)
    profile = _profile(model, linears, calibration, sample_rows)
    thresholds = {n: float(activation_threshold) * float(torch.sqrt(torch.mean(x * x))) for n, (_, x) in profile.items()}
    macs = {n: profile[n][0] * m.in_features * m.out_features for n, m in linears.items()}
    dense_q = float(quality_fn(model))
    floor = target * dense_q
    log.info("TASDER: %d layers, %d dense MACs, dense quality %.6f, floor %.6f", len(linears), sum(macs.values()),
             dense_q, floor)
    cands = _candidates(linears, profile, menu_n, thresholds)
    current = {n: LayerPlan("dense", "", 0.0, macs[n]) for n in linears}
    undo: Dict[str, Callable[[], None]] = {}
    rejected: Dict[Tuple[str, str], float] = {}
    history: List[dict] = []
    quality = dense_q
    try:
        if start is not None:
            quality = _warm_start(model, start, linears, macs, current, undo, quality_fn, floor)
        for c in tqdm(cands, desc="TASDER", disable=not progress, leave=False):
            if c.density >= current[c.layer].density or c.error >= rejected.get((c.layer, c.kind), float("inf")):
                continue
            trial = LayerPlan(c.kind, c.series, thresholds[c.layer] if c.kind == "activation" else 0.0, macs[c.layer])
            if c.layer in undo:
                undo.pop(c.layer)()
            undo[c.layer] = _simulate(linears[c.layer], trial)
            q = float(quality_fn(model))
            ok = q >= floor
            history.append({"layer": c.layer, "kind": c.kind, "series": c.series, "proxy_error": c.error,
                            "quality": q, "accepted": ok})
            log.debug("TASDER %s %s %s: quality %.6f %s", c.layer, c.kind, c.series, q, "kept" if ok else "undone")
            if ok:
                current[c.layer], quality = trial, q
                continue
            rejected[(c.layer, c.kind)] = c.error
            undo.pop(c.layer)()
            if current[c.layer].kind != "dense":
                undo[c.layer] = _simulate(linears[c.layer], current[c.layer])
    finally:
        for u in undo.values():
            u()
    plan = TASDERPlan(current, float(target), dense_q, quality, history)
    log.info("TASDER: MAC reduction %.4f at quality %.6f (%d evaluations)", plan.mac_reduction, quality, len(history))
    return plan


def _warm_start(model, start: TASDERPlan, linears, macs, current, undo, quality_fn, floor) -> float:
    for name, lp in start.layers.items():
        if name not in linears:
            raise ValueError(f"start plan names layer {name!r}, which is not among the searched layers")
        if lp.kind != "dense":
            current[name] = LayerPlan(lp.kind, lp.series, lp.threshold, macs[name])
            undo[name] = _simulate(linears[name], current[name])
    q = float(quality_fn(model))
    if q < floor:
        raise ValueError(f"start plan reaches quality {q:.6f}, below this search's floor {floor:.6f}")
    return q


def uniform_plan(model: Any, calibration: Any, kind: str, series: str,
                 layers: Optional[Callable[[str], bool]] = None, threshold: float = 0.0) -> TASDERPlan:
    """The same series on every selected nn.Linear (layers whose K does not fit stay dense): the
    baseline TASDER is compared with."""
    if kind not in ("weight", "activation"):
        raise ValueError(f"kind must be 'weight' or 'activation', got {kind!r}")
    linears = _linear_layers(model, layers)
    profile = _profile(model, linears, calibration, 1)
    cfgs = parse_series(series)
    plans = {}
    for n, m in linears.items():
        macs = profile[n][0] * m.in_features * m.out_features
        fits = all(m.in_features % c.m == 0 for c in cfgs)
        plans[n] = LayerPlan(kind if fits else "dense", series if fits else "", threshold, macs)
    return TASDERPlan(plans)
