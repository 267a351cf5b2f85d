"""TASDER: a per-layer search of TASD series for weights (TASD-W) and activations (TASD-A).

Every nn.Linear of a model may stay dense, have its weight replaced by a TASD series (offline), or
have its input activation decomposed at run time (TASD-A). The search lowers the total compute
(Σ layers: series density × layer MACs) as far as it can while `quality_fn(model)` stays at or
above `target × dense quality`, without any fine-tuning (see `TASDERSearch` for the steps):
proxy errors per (layer, option) from one calibration pass, one measured sensitivity per layer,
layers' steps ordered by MACs saved per unit of predicted quality loss, a bisection and a
refinement with measured quality, and the best uniform plan as a guaranteed fallback.

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
# Single terms of the m = 4, 8 and 16 families and TASD series mixing them (densities an engine
# without that single pattern lacks), from 15/16 down to 1/2; every entry is tried for both kinds.
_SERIES_MENU = ("15:16", "7:8+1:16", "7:8", "14:16", "13:16", "3:4+1:16", "6:8+1:16", "12:16", "6:8", "3:4",
                "11:16", "5:8", "10:16", "2:4+1:8", "9:16", "4:8+1:16", "8:16", "4:8", "2:4")
DEFAULT_MENU: Dict[str, Tuple[str, ...]] = {"weight": _SERIES_MENU, "activation": _SERIES_MENU}


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
    # The best uniform plan the search found on the same data: {kind, series, quality, mac_reduction}.
    uniform: Optional[dict] = field(default=None, compare=False)

    def describe(self) -> List[dict]:
        """Per-layer choices: name, kind, series, density, MACs share."""
        total = self.dense_macs or 1
        return [{"layer": n, "kind": lp.kind, "series": lp.series, "density": lp.density,
                 "mac_share": lp.macs / total} for n, lp in self.layers.items()]

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
             "uniform": self.uniform, "history": self.history}
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
                   float(d.get("quality", 1.0)), list(d.get("history", [])), d.get("uniform"))

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
class _Option:
    """One menu entry that fits a layer, with its proxy error: ‖ΔY‖/‖Y‖ of that layer's output on
    the sampled calibration inputs."""

    kind: str
    series: str
    density: float
    error: float


@dataclass(frozen=True)
class _Move:
    """One step of a layer down its (cost, predicted loss) lower convex hull."""

    layer: str
    option: _Option
    ratio: float  # MACs saved per unit of predicted quality loss (inf when free)


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


def _fits(series: str, k: int) -> bool:
    return all(k % c.m == 0 for c in parse_series(series))


def _layer_options(mod: Any, x: Any, threshold: float, menu: Dict[str, Tuple[str, ...]]) -> List[_Option]:
    """Every menu entry (both kinds) that fits the layer's K, with its proxy output error."""
    torch = _torch()
    w = mod.weight.detach().float()
    ynorm = float(torch.linalg.norm(x @ w.T)) or 1.0
    out = []
    for kind in ("weight", "activation"):
        for series in menu.get(kind, ()):
            if not _fits(series, mod.in_features):
                continue
            if kind == "weight":
                err = float(torch.linalg.norm(x @ (w - tasd(w, series).to_dense()).T)) / ynorm
            else:
                xa = tasd_activation(x, series, threshold).to_dense()
                err = float(torch.linalg.norm((x - xa) @ w.T)) / ynorm
            out.append(_Option(kind, series, series_density(series), err))
    return out


def _normalise_menu(menu: Optional[Dict[str, Sequence[str]]]) -> Dict[str, Tuple[str, ...]]:
    menu = DEFAULT_MENU if menu is None else menu
    if not isinstance(menu, dict) or not set(menu) <= {"weight", "activation"}:
        raise ValueError("menu must be a dict with keys 'weight' and/or 'activation' mapping to lists of series")
    out = {}
    for kind, entries in menu.items():
        if isinstance(entries, str) or not isinstance(entries, (list, tuple)):
            raise ValueError(f"menu[{kind!r}] must be a list of series strings, got {entries!r}")
        seen: Dict[str, None] = {}
        for s in entries:
            seen["+".join(str(c) for c in parse_series(s))] = None  # canonical, duplicates dropped
        out[kind] = tuple(seen)
    if not any(out.values()):
        raise ValueError("menu has no series to try")
    return out


def _plan_key(assign: Dict[str, LayerPlan]) -> Tuple[Tuple[str, str, str], ...]:
    return tuple(sorted((n, lp.kind, lp.series) for n, lp in assign.items() if lp.kind != "dense"))


class _Evaluator:
    """Applies per-layer assignments to the model in simulate mode, changing only the layers that
    differ from what is applied, and remembers every quality measured (by plan)."""

    def __init__(self, model: Any, linears: Dict[str, Any], quality_fn: Callable[[Any], float]) -> None:
        self.model, self.linears, self.quality_fn = model, linears, quality_fn
        self.applied: Dict[str, LayerPlan] = {}
        self.undo: Dict[str, Callable[[], None]] = {}
        self.cache: Dict[tuple, float] = {}
        self.evaluations = 0

    def quality(self, assign: Dict[str, LayerPlan]) -> Tuple[float, bool]:
        """(quality, whether it was measured now rather than remembered)."""
        key = _plan_key(assign)
        if key in self.cache:
            return self.cache[key], False
        self._apply(assign)
        q = float(self.quality_fn(self.model))
        self.cache[key] = q
        self.evaluations += 1
        return q, True

    def _apply(self, assign: Dict[str, LayerPlan]) -> None:
        for name, lp in assign.items():
            cur = self.applied.get(name)
            if (cur is None and lp.kind == "dense") or cur == lp:
                continue
            if name in self.undo:
                self.undo.pop(name)()
                del self.applied[name]
            if lp.kind != "dense":
                self.undo[name] = _simulate(self.linears[name], lp)
                self.applied[name] = lp

    def restore(self) -> None:
        for name in list(self.undo):
            self.undo.pop(name)()
        self.applied.clear()


class TASDERSearch:
    """TASDER's search state for one model: the layers' calibration profile, every fitting menu
    option with its proxy error, the measured layer sensitivities and every quality evaluated so
    far. Searches at several targets (``.search(target)``) share all of it.

    How a search works (deterministic, no fine-tuning):
    1. sensitivity: each layer alone gets a probe option (density nearest 0.75); the measured
       quality loss over the probe's squared proxy error is the layer's sensitivity α, so the
       predicted loss of an option is α·error² (additive over layers, to first order);
    2. per layer, the options' lower convex hull in (MACs, predicted loss) gives steps down; all
       steps of all layers are ordered by MACs saved per unit of predicted loss (least sensitive
       layers and cheapest cuts first);
    3. a bisection over prefixes of that order (measured quality) finds the longest prefix that
       meets the floor, then a refinement pass tries every later step one at a time (kept if the
       floor still holds; a rejected step stops that layer);
    4. the best uniform plan (one menu entry on every layer, the cheapest that meets the floor) is
       always a candidate and is refined the same way, so the result never costs more MACs than
       it on the calibration data."""

    def __init__(self, model: Any, calibration: Any, quality_fn: Callable[[Any], float],
                 menu: Optional[Dict[str, Sequence[str]]] = None, layers: Optional[Callable[[str], bool]] = None,
                 activation_threshold: float = 0.0, sample_rows: int = 256, progress: bool = True,
                 max_refine: int = 48) -> None:
        activation_threshold = float(activation_threshold)
        if not np.isfinite(activation_threshold) or activation_threshold < 0:
            raise ValueError(f"activation_threshold must be finite and >= 0, got {activation_threshold}")
        if int(sample_rows) < 1:
            raise ValueError(f"sample_rows must be >= 1, got {sample_rows}")
        if int(max_refine) < 0:
            raise ValueError(f"max_refine must be >= 0, got {max_refine}")
        torch = _torch()
        self.menu = _normalise_menu(menu)
        self.progress, self.max_refine = bool(progress), int(max_refine)
        self.linears = _linear_layers(model, layers)
        profile = _profile(model, self.linears, calibration, int(sample_rows))
        self.thresholds = {n: activation_threshold * float(torch.sqrt(torch.mean(x * x)))
                           for n, (_, x) in profile.items()}
        self.macs = {n: profile[n][0] * m.in_features * m.out_features for n, m in self.linears.items()}
        self.options = {n: _layer_options(m, profile[n][1], self.thresholds[n], self.menu)
                        for n, m in self._bar(self.linears.items(), "TASDER proxies")}
        self.dense_quality = float(quality_fn(model))
        self.evaluator = _Evaluator(model, self.linears, quality_fn)
        self.history: List[dict] = []
        self._sensitivity: Optional[Dict[str, float]] = None
        self._moves: Optional[List[_Move]] = None
        log.info("TASDER: %d layers, %d dense MACs, dense quality %.6f", len(self.linears), sum(self.macs.values()),
                 self.dense_quality)

    # -- small helpers ---------------------------------------------------------------------------

    def _bar(self, items: Any, desc: str) -> Any:
        from tqdm.auto import tqdm

        return tqdm(list(items), desc=desc, disable=not self.progress, leave=False)

    def layer_plan(self, name: str, option: Optional[_Option]) -> LayerPlan:
        if option is None:
            return LayerPlan("dense", "", 0.0, self.macs[name])
        threshold = self.thresholds[name] if option.kind == "activation" else 0.0
        return LayerPlan(option.kind, option.series, threshold, self.macs[name])

    def dense_assignment(self) -> Dict[str, LayerPlan]:
        return {n: self.layer_plan(n, None) for n in self.linears}

    def macs_of(self, assign: Dict[str, LayerPlan]) -> float:
        return float(sum(lp.cost for lp in assign.values()))

    def _evaluate(self, assign: Dict[str, LayerPlan], phase: str, note: str = "") -> float:
        q, fresh = self.evaluator.quality(assign)
        if fresh:
            total = sum(self.macs.values())
            self.history.append({"phase": phase, "note": note, "quality": q,
                                 "mac_reduction": 1.0 - self.macs_of(assign) / total})
            log.debug("TASDER %s %s: quality %.6f", phase, note, q)
        return q

    def _with(self, assign: Dict[str, LayerPlan], name: str, option: Optional[_Option]) -> Dict[str, LayerPlan]:
        out = dict(assign)
        out[name] = self.layer_plan(name, option)
        return out

    # -- uniform plans ---------------------------------------------------------------------------

    def uniform_candidates(self) -> List[Tuple[str, str, Dict[str, LayerPlan]]]:
        """(kind, series, assignment) for every menu entry on every layer it fits (others dense),
        most MACs saved first; ties: smaller MAC-weighted proxy error, kind, series."""
        out = []
        for kind, entries in self.menu.items():
            for series in entries:
                assign, err = self.dense_assignment(), 0.0
                for n in self.linears:
                    opt = next((o for o in self.options[n] if o.kind == kind and o.series == series), None)
                    if opt is not None:
                        assign[n] = self.layer_plan(n, opt)
                        err += opt.error * self.macs[n]
                out.append((self.macs_of(assign), err, kind, series, assign))
        out.sort(key=lambda t: (t[0], t[1], t[2], t[3]))
        return [(kind, series, assign) for _, _, kind, series, assign in out]

    def uniform_quality(self, kind: str, series: str) -> float:
        for k, s, assign in self.uniform_candidates():
            if (k, s) == (kind, series):
                return self._evaluate(assign, "uniform", f"{k} {s}")
        raise ValueError(f"{kind} {series!r} is not in the menu")

    def best_uniform(self, floor: float) -> Optional[Tuple[str, str, Dict[str, LayerPlan], float]]:
        """The uniform plan that saves the most MACs while meeting floor (None if none does)."""
        for kind, series, assign in self._bar(self.uniform_candidates(), "TASDER uniform"):
            q = self._evaluate(assign, "uniform", f"{kind} {series}")
            if q >= floor:
                return kind, series, assign, q
        return None

    # -- sensitivity and the ordered steps -------------------------------------------------------

    @staticmethod
    def _probe(options: List[_Option]) -> _Option:
        return min(options, key=lambda o: (abs(o.density - 0.75), o.kind != "weight", o.error, o.series))

    def sensitivities(self) -> Dict[str, float]:
        """α per layer: measured quality loss of the probe option on that layer alone / error²."""
        if self._sensitivity is None:
            dense = self.dense_assignment()
            alpha = {}
            for n in self._bar([n for n in self.linears if self.options[n]], "TASDER sensitivity"):
                probe = self._probe(self.options[n])
                q = self._evaluate(self._with(dense, n, probe), "sensitivity", f"{n} {probe.kind} {probe.series}")
                alpha[n] = max(self.dense_quality - q, 0.0) / max(probe.error ** 2, 1e-30)
            self._sensitivity = alpha
        return self._sensitivity

    def moves(self) -> List[_Move]:
        """Every layer's hull steps, in order of MACs saved per unit of predicted loss."""
        if self._moves is None:
            alpha = self.sensitivities()
            positive = sorted(a for a in alpha.values() if a > 0)
            # A layer that measured no loss still ranks its options by error (tiny α, not zero).
            eps = 1e-3 * positive[len(positive) // 2] if positive else 1.0
            order = {n: i for i, n in enumerate(self.linears)}
            steps = []
            for n, a in alpha.items():
                for i, mv in enumerate(self._hull(n, a + eps)):
                    steps.append((-mv.ratio, order[n], i, mv))
            steps.sort(key=lambda t: t[:3])
            self._moves = [t[3] for t in steps]
        return self._moves

    def _hull(self, name: str, alpha: float) -> List[_Move]:
        """Steps from dense down the lower convex hull of (MACs, α·error²) of the layer's options."""
        macs = self.macs[name]
        cost, loss, out = float(macs), 0.0, []
        while True:
            cheaper = [o for o in self.options[name] if o.density * macs < cost]
            if not cheaper:
                return out

            def ratio(o: _Option) -> float:
                dl = alpha * o.error ** 2 - loss
                return float("inf") if dl <= 0 else (cost - o.density * macs) / dl

            best = max(cheaper, key=lambda o: (ratio(o), -o.density, -o.error, o.kind, o.series))
            out.append(_Move(name, best, ratio(best)))
            cost, loss = best.density * macs, max(loss, alpha * best.error ** 2)

    def _prefix(self, k: int) -> Dict[str, LayerPlan]:
        assign = self.dense_assignment()
        for mv in self.moves()[:k]:
            assign[mv.layer] = self.layer_plan(mv.layer, mv.option)
        return assign

    # -- the search ------------------------------------------------------------------------------

    def _bisect(self, floor: float) -> Dict[str, LayerPlan]:
        """The longest prefix of the ordered steps that meets floor (quality taken as monotone)."""
        lo, hi = 0, len(self.moves())
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self._evaluate(self._prefix(mid), "bisect", f"{mid} of {len(self.moves())} steps") >= floor:
                lo = mid
            else:
                hi = mid - 1
        return self._prefix(lo)

    def _refine(self, assign: Dict[str, LayerPlan], floor: float, label: str) -> Dict[str, LayerPlan]:
        """Tries every ordered step that makes a layer cheaper, one at a time (kept if the floor
        holds); a layer whose step is rejected is not tried again."""
        stuck, tried = set(), 0
        for mv in self._bar(self.moves(), f"TASDER refine ({label})"):
            if mv.layer in stuck or mv.option.density >= assign[mv.layer].density:
                continue
            if tried >= self.max_refine:
                log.info("TASDER: refinement of the %s plan stopped after %d evaluations", label, tried)
                break
            trial = self._with(assign, mv.layer, mv.option)
            fresh_before = self.evaluator.evaluations
            q = self._evaluate(trial, "refine " + label, f"{mv.layer} {mv.option.kind} {mv.option.series}")
            tried += self.evaluator.evaluations - fresh_before
            if q >= floor:
                assign = trial
            else:
                stuck.add(mv.layer)
        return assign

    def search(self, target: float = 0.99, start: Optional[TASDERPlan] = None) -> TASDERPlan:
        """The cheapest plan found whose calibration quality is >= target × dense quality."""
        target = float(target)
        if not 0.0 < target <= 1.0:
            raise ValueError(f"target must be in (0, 1], got {target}")
        floor = target * self.dense_quality
        first = len(self.history)
        seeds: List[Tuple[str, Dict[str, LayerPlan]]] = []
        try:
            if start is not None:
                seeds.append(("start", self._start_assignment(start, floor)))
            uniform = self.best_uniform(floor)
            if uniform is not None:
                seeds.append(("uniform", uniform[2]))
            seeds.append(("sensitivity", self._bisect(floor)))
            best: Optional[Dict[str, LayerPlan]] = None
            # Most promising seed first; a seed is refined only if it could still win.
            for label, assign in sorted(seeds, key=lambda s: self.macs_of(s[1])):
                if best is None or self.macs_of(assign) <= self.macs_of(best):
                    cand = self._refine(assign, floor, label)
                    if best is None or self.macs_of(cand) < self.macs_of(best):
                        best = cand
        finally:
            self.evaluator.restore()
        quality = self.evaluator.quality(best)[0] if _plan_key(best) in self.evaluator.cache else self.dense_quality
        base = None
        if uniform is not None:
            base = {"kind": uniform[0], "series": uniform[1], "quality": uniform[3],
                    "mac_reduction": 1.0 - self.macs_of(uniform[2]) / sum(self.macs.values())}
        plan = TASDERPlan(best, target, self.dense_quality, quality, self.history[first:], base)
        log.info("TASDER: target %.4f, MAC reduction %.4f at quality %.6f (%d evaluations; best uniform %s)", target,
                 plan.mac_reduction, quality, len(plan.history), base and f"{base['kind']} {base['series']}")
        return plan

    def _start_assignment(self, start: TASDERPlan, floor: float) -> Dict[str, LayerPlan]:
        assign = self.dense_assignment()
        for name, lp in start.layers.items():
            if name not in self.linears:
                raise ValueError(f"start plan names layer {name!r}, which is not among the searched layers")
            if lp.kind != "dense":
                threshold = self.thresholds[name] if lp.kind == "activation" else 0.0
                assign[name] = LayerPlan(lp.kind, lp.series, threshold, self.macs[name])
        q = self._evaluate(assign, "start")
        if q < floor:
            raise ValueError(f"start plan reaches quality {q:.6f}, below this search's floor {floor:.6f}")
        return assign


def tasder(model: Any, calibration: Any, quality_fn: Callable[[Any], float], target: float = 0.99,
           menu: Optional[Dict[str, Sequence[str]]] = None, layers: Optional[Callable[[str], bool]] = None,
           activation_threshold: float = 0.0, sample_rows: int = 256, progress: bool = True,
           start: Optional[TASDERPlan] = None, max_refine: int = 48) -> TASDERPlan:
    """Searches per-layer TASD series for a torch model's nn.Linear layers (no fine-tuning); see
    TASDERSearch for how.

    calibration: a callable run as calibration(model), or the input(s) of model(...); used once to
    count each layer's rows (for MACs) and sample its inputs (for the proxy errors).
    quality_fn(model) -> float, higher is better; the plan keeps it >= target × its dense value.
    menu: {"weight": [...series], "activation": [...series]} (default DEFAULT_MENU); every entry is
    tried per layer, and on all layers at once (the uniform plans the result never loses to).
    layers: optional filter on module names. activation_threshold: TASD-A pseudo-density threshold
    as a fraction of each layer's input RMS (0 = exact zeros only).
    start: an earlier plan meeting this target (e.g. that of a stricter target), used as one more
    starting point, so the result never costs more MACs than it.
    max_refine: most evaluations spent refining each starting point.
    The model is returned unchanged; apply the plan with plan.apply(model)."""
    if not 0.0 < float(target) <= 1.0:
        raise ValueError(f"target must be in (0, 1], got {target}")
    search = TASDERSearch(model, calibration, quality_fn, menu, layers, activation_threshold, sample_rows, progress,
                          max_refine)
    return search.search(target, start)


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
