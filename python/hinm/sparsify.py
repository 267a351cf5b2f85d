"""`hinm.sparsify_`: prune every matching nn.Linear of a torch model in place.

Per layer: saliency (|W|, activation-aware |W|·‖x_j‖, or second-order OBS from calibration inputs)
→ permutation search (gyro by default, on that saliency) → HiNM / N:M mask → optional layer-wise
reconstruction (SparseGPT-style, see reconstruct.py) → swap in a compressed HiNMLinear (or, with
compress=False, keep the nn.Linear with its pruned weights — the only option for unstructured).

With calibration and reconstruction the layers are processed *sequentially* by default: each group
of layers reading the same input (q/k/v) sees inputs from the model whose earlier layers are already
pruned, and is fitted to the dense model's outputs. Layers of a group, and all layers when nothing
is sequential, are searched in parallel threads (hinm's C++ releases the GIL)."""

from __future__ import annotations

import logging
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch

from ._plan import Plan, Unstructured, compress_scores, make_plan, parse_any_config, retained
from .calibration import (LayerStats, capture_inputs, check_batches, collect_stats, default_forward,
                          execution_groups)
from .pattern import HiNMConfig, NMConfig
from .permute import EFFORTS
from .reconstruct import METHODS, reconstruct as reconstruct_layer
from .saliency import SALIENCIES, saliency as saliency_scores

log = logging.getLogger("hinm")

PERMUTE_METHODS = ("gyro", "identity", "random", "channel_swap")


@dataclass(frozen=True)
class LayerReport:
    name: str
    shape: Tuple[int, int]
    density: float                  # kept fraction of the weight
    retained_identity: float        # retained saliency of the mask without permutation
    retained: float                 # ... with the chosen permutation
    seconds: float
    error_before: Optional[float]   # relative calibration output error of the plain mask
    error_after: Optional[float]    # ... after reconstruction


@dataclass(frozen=True)
class SparsifyReport:
    config: str
    permute: str
    saliency: str
    reconstruct: Optional[str]
    sequential: bool
    layers: Tuple[LayerReport, ...]
    skipped: Tuple[Tuple[str, str], ...]   # (layer name, reason)
    seconds: float

    def to_dict(self) -> dict:
        d = asdict(self)
        d["layers"] = [asdict(r) for r in self.layers]
        return d

    @property
    def mean_retained(self) -> float:
        return sum(r.retained for r in self.layers) / max(1, len(self.layers))

    def table(self) -> str:
        head = "| layer | shape | retained (identity) | retained | error before | error after | s |\n|---|---|---|---|---|---|---|"
        rows = [f"| {r.name} | {r.shape[0]}×{r.shape[1]} | {r.retained_identity:.4f} | {r.retained:.4f} | "
                f"{_fmt(r.error_before)} | {_fmt(r.error_after)} | {r.seconds:.2f} |" for r in self.layers]
        return "\n".join([head] + rows)


def _fmt(x: Optional[float]) -> str:
    return "-" if x is None else f"{x:.4f}"


@dataclass(frozen=True)
class _Perm:
    """A permutation in the shape hinm.compress reads (row_perm [R], col_orders [T, K])."""

    row_perm: torch.Tensor
    col_orders: torch.Tensor


def select_linears(model: torch.nn.Module, targets: Optional[Sequence[str]] = None,
                   ignore: Sequence[str] = ()) -> Dict[str, torch.nn.Linear]:
    """nn.Linear modules whose name matches a `targets` regex (all by default) and no `ignore`
    regex (re.search). A target that matches no nn.Linear is a ValueError naming what it matched."""
    if isinstance(targets, str):
        targets = [targets]
    if isinstance(ignore, str):
        ignore = [ignore]
    try:
        tpats = [re.compile(t) for t in targets] if targets else None
        ipats = [re.compile(t) for t in ignore]
    except re.error as e:
        raise ValueError(f"bad layer regex: {e}") from None
    named = [(n, m) for n, m in model.named_modules() if n]
    for pat in tpats or []:
        hits = [(n, m) for n, m in named if pat.search(n)]
        if not any(isinstance(m, torch.nn.Linear) for _, m in hits):
            what = f"; it matches {hits[0][0]!r}, a {type(hits[0][1]).__name__}" if hits else ""
            raise ValueError(f"target {pat.pattern!r} matches no nn.Linear layer{what}")
    return {n: m for n, m in named if isinstance(m, torch.nn.Linear)
            and (tpats is None or any(p.search(n) for p in tpats))
            and not any(p.search(n) for p in ipats)}


def _incompatible(layer: torch.nn.Linear, config: Any) -> Optional[str]:
    k = layer.in_features
    if isinstance(config, NMConfig) and k % config.m:
        return f"input width {k} is not a multiple of m={config.m}"
    if isinstance(config, HiNMConfig):
        try:
            config.kept_columns(k)
        except ValueError as e:
            return str(e)
    if layer.weight.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        return f"weight dtype {layer.weight.dtype} is not supported"
    return None


def _set_module(model: torch.nn.Module, name: str, module: torch.nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def _search(weight: torch.Tensor, config: Any, scores: torch.Tensor, method: str, seed: int,
            time_budget: Optional[float], effort: str = "default") -> Optional[_Perm]:
    if method == "identity" or isinstance(config, Unstructured):
        return None
    from .permute import search_permutation

    res = search_permutation(weight.detach().float().contiguous(), config, method=method,
                             scores=scores.float().contiguous(), seed=seed, time_budget=time_budget,
                             effort=effort)
    row_perm = getattr(res, "row_perm", None)
    col_orders = getattr(res, "col_orders", None)
    if col_orders is None:
        col_orders = torch.as_tensor(res.col_perm).reshape(1, -1)
    if row_perm is None:
        row_perm = torch.arange(weight.shape[0])
    return _Perm(torch.as_tensor(row_perm, dtype=torch.int64), torch.as_tensor(col_orders, dtype=torch.int64))


@dataclass
class _Job:
    name: str
    layer: torch.nn.Linear
    stats: Optional[LayerStats]


def _prune_layer(job: _Job, config: Any, opts: dict) -> Tuple[torch.nn.Module, LayerReport]:
    start = time.perf_counter()
    w = job.layer.weight.detach()
    scores = saliency_scores(w, opts["saliency"], job.stats, opts["damp"])
    ident = make_plan(scores, config)
    perm = _search(w, config, scores, opts["permute"], opts["seed"], opts["time_budget"], opts["permute_effort"])
    plan: Plan = ident if perm is None else make_plan(scores, config, perm.row_perm, perm.col_orders)
    before = after = None
    if opts["reconstruct"]:
        rec = reconstruct_layer(w, plan, job.stats, opts["reconstruct"], opts["damp"])
        new_w, mask, before, after = rec.weight, rec.mask, rec.error_before, rec.error_after
    else:
        new_w, mask = w.to(torch.float64) * plan.mask, plan.mask
    new_w = new_w.to(w.dtype)
    if opts["compress"]:
        from .nn import HiNMLinear, compress_weight

        keep_perm = perm if perm is not None else None
        container = compress_weight(new_w.contiguous(), config, keep_perm, compress_scores(plan, mask))
        module: torch.nn.Module = HiNMLinear.from_container(container, job.layer.bias)
    else:
        module = job.layer
        with torch.no_grad():
            module.weight.copy_(new_w)
    report = LayerReport(job.name, (int(w.shape[0]), int(w.shape[1])), float(mask.float().mean()),
                         retained(scores, ident.mask), retained(scores, plan.mask),
                         time.perf_counter() - start, before, after)
    return module, report


def sparsify_(model: torch.nn.Module, config: Union[str, NMConfig, HiNMConfig, Unstructured],
              targets: Optional[Sequence[str]] = None, ignore: Sequence[str] = (), permute: str = "gyro",
              calibration: Optional[Iterable[Any]] = None, saliency: Optional[str] = None,
              reconstruct: Union[bool, str] = False, sequential: bool = True, compress: bool = True,
              calibration_forward: Optional[Callable[[torch.nn.Module, Any], Any]] = None,
              calibration_token_mask: Optional[Callable[[Any], torch.Tensor]] = None,
              calibration_stats: Optional[Dict[str, LayerStats]] = None,
              damp: float = 0.01, seed: int = 0, time_budget: Optional[float] = None,
              threads: Optional[int] = None, progress: bool = True, fold_permutations: bool = True,
              permute_effort: str = "default") -> SparsifyReport:
    """Prune `model`'s nn.Linear layers in place; returns a per-layer SparsifyReport.

    config: HiNMConfig / NMConfig / pattern string ('hinm:v64:0.5:2:4', '2:4'), or
        'unstructured:0.75' (needs compress=False).
    targets / ignore: regexes on module names (re.search); a target matching no nn.Linear raises.
    permute: 'gyro' | 'identity' | 'random' | 'channel_swap' (hinm.search_permutation methods);
        permute_effort: 'default' | 'fast' (search_permutation's effort: 'fast' searches several
        times quicker and keeps most of the gain).
    calibration: a sequence of model inputs (fed as model(x), model(*x) or model(**x), or through
        `calibration_forward(model, batch)`; `calibration_token_mask(batch)` -> bool [batch, tokens]
        marks real tokens so padding stays out of the statistics; `calibration_stats`, from
        hinm.calibration.collect_stats on the dense model, saves that pass when not sequential); enables saliency 'activation' (the default then) / 'obs'
        and `reconstruct` (True = 'sparsegpt+refit', or a method name from reconstruct.METHODS).
    sequential: with reconstruction, take each layer's inputs from the already-pruned model.
    compress: swap in HiNMLinear modules (False: keep nn.Linear with pruned weights).
    fold_permutations: with compress, move the row permutation of each transformer MLP's
        up-projection into its down-projection's column gather (hinm.nn.fold_mlp_permutations:
        same outputs bit for bit, faster; the two modules are then a permuted pair)."""
    start = time.perf_counter()
    config = parse_any_config(config)
    if isinstance(config, Unstructured) and compress:
        raise ValueError("unstructured sparsity cannot be stored compressed; pass compress=False")
    if permute not in PERMUTE_METHODS:
        raise ValueError(f"permute must be one of {', '.join(PERMUTE_METHODS)}, got {permute!r}")
    if permute_effort not in EFFORTS:
        raise ValueError(f"permute_effort must be one of {', '.join(EFFORTS)}, got {permute_effort!r}")
    saliency = saliency or ("activation" if calibration is not None else "magnitude")
    if saliency not in SALIENCIES:
        raise ValueError(f"saliency must be one of {', '.join(SALIENCIES)}, got {saliency!r}")
    method = ("sparsegpt+refit" if reconstruct is True else reconstruct) or None
    if method is not None and method not in METHODS:
        raise ValueError(f"reconstruct must be True/False or one of {', '.join(METHODS)}, got {reconstruct!r}")
    if calibration is None and (saliency != "magnitude" or method):
        raise ValueError(f"saliency={saliency!r}{' and reconstruction' if method else ''} need calibration inputs")
    batches = check_batches(calibration) if calibration is not None else None
    forward = calibration_forward or default_forward

    layers = select_linears(model, targets, ignore)
    skipped: List[Tuple[str, str]] = []
    for name, layer in list(layers.items()):
        reason = _incompatible(layer, config)
        if reason:
            log.warning("hinm.sparsify_: skipping %s (%d×%d): %s", name, layer.out_features, layer.in_features, reason)
            skipped.append((name, reason))
            del layers[name]
    opts = dict(saliency=saliency, permute=permute, permute_effort=permute_effort, reconstruct=method, damp=damp,
                seed=seed, time_budget=time_budget, compress=compress)
    seq = bool(method and sequential and batches is not None)
    if batches is not None and layers:
        groups = execution_groups(model, layers, batches[0], forward) if seq else [list(layers)]
    else:
        groups = [list(layers)]
    # the dense model's inputs to every layer, captured once before anything is pruned
    dense_inputs = capture_inputs(model, layers, batches, forward, calibration_token_mask) if seq else None
    workers = threads or max(1, min(4, torch.get_num_threads()))
    reports: Dict[str, LayerReport] = {}
    bar = _progress(len(layers), progress, f"sparsify {config}")
    was_training = model.training
    model.eval()
    try:
        for group in groups:
            stats: Dict[str, Optional[LayerStats]] = {n: None for n in group}
            if batches is not None and group:
                current = {n: layers[n] for n in group}
                if not seq and calibration_stats is not None:
                    stats = {n: calibration_stats[n] for n in group}
                else:
                    stats = collect_stats(model, current, batches, forward, stop_after=group[-1] if seq else None,
                                          token_mask=calibration_token_mask, dense_inputs=dense_inputs)
            jobs = [_Job(n, layers[n], stats[n]) for n in group]
            with ThreadPoolExecutor(max_workers=min(workers, max(1, len(jobs)))) as pool:
                for job, (module, rep) in zip(jobs, pool.map(lambda j: _prune_layer(j, config, opts), jobs)):
                    if module is not job.layer:
                        _set_module(model, job.name, module)
                    reports[job.name] = rep
                    if bar is not None:
                        bar.update(1)
    finally:
        if bar is not None:
            bar.close()
        model.train(was_training)
    if compress and fold_permutations:
        from .nn import fold_mlp_permutations

        folded = fold_mlp_permutations(model)
        if folded:
            log.info("hinm.sparsify_: folded the row permutation of %d MLP layers into the next layer", len(folded))
    ordered = tuple(reports[n] for n in layers if n in reports)
    return SparsifyReport(str(config), permute if not isinstance(config, Unstructured) else "identity", saliency,
                          method, seq, ordered, tuple(skipped), time.perf_counter() - start)


def _progress(total: int, enabled: bool, desc: str):
    if not enabled or total == 0:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm is a dependency, but stay quiet without it
        return None
    return tqdm(total=total, desc=desc, unit="layer", leave=False)
