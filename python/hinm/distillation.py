"""Distillation recovery: train a pruned student to match its dense teacher on unlabeled inputs,
with every sparsity mask held fixed, ending in a hard-masked, compressible model.

    report = hinm.distill(student, teacher, batches, DistillConfig(seconds=300))

- HiNMLinear modules (from `hinm.sparsify_`) are trained through a masked dense nn.Linear and put
  back as HiNMLinear with the *same* structure (row permutation, kept columns, in-group positions),
  only new values — so the result compresses exactly as before and reloads with hinm.load.
- Plain nn.Linear modules (e.g. pruned with compress=False, unstructured) keep their exact zeros:
  mask = weight != 0 (a dense layer has no exact zeros, so it trains freely).
- The loss compares outputs of model(batch) (or `forward(model, batch)`): a tensor by relative
  squared error; a dict as sentence-transformers returns it by (1 − cosine) of 'sentence_embedding'
  plus relative squared error of 'token_embeddings' over real tokens ('attention_mask'); a
  transformers output by relative squared error of 'last_hidden_state'.
Both models run in eval mode (no dropout: the student imitates the teacher's deterministic outputs).
Word-embedding tables stay frozen (large, and not pruned); everything else trains (Adam)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

from .calibration import check_batches, default_forward

log = logging.getLogger("hinm")


@dataclass(frozen=True)
class DistillConfig:
    """steps / seconds (wall clock) / cpu_seconds (process CPU time, all threads — the fair budget on
    a shared machine: 10 minutes on 2 cores = 1200): stop at whichever comes first (at least one
    must be set). lr: Adam learning rate; hidden_weight: weight of the token-level term for dict
    outputs; train_embeddings: also train embedding tables (frozen by default)."""

    steps: Optional[int] = None
    seconds: Optional[float] = 300.0
    cpu_seconds: Optional[float] = None
    lr: float = 1e-4
    hidden_weight: float = 1.0
    train_embeddings: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps is None and self.seconds is None and self.cpu_seconds is None:
            raise ValueError("DistillConfig needs steps or seconds (a budget)")
        if self.steps is not None and (isinstance(self.steps, bool) or int(self.steps) != self.steps or self.steps < 1):
            raise ValueError(f"DistillConfig.steps must be a positive integer, got {self.steps!r}")
        if self.seconds is not None and not float(self.seconds) > 0:
            raise ValueError(f"DistillConfig.seconds must be > 0, got {self.seconds!r}")
        if self.cpu_seconds is not None and not float(self.cpu_seconds) > 0:
            raise ValueError(f"DistillConfig.cpu_seconds must be > 0, got {self.cpu_seconds!r}")
        if not float(self.lr) > 0:
            raise ValueError(f"DistillConfig.lr must be > 0, got {self.lr!r}")
        if not float(self.hidden_weight) >= 0:
            raise ValueError(f"DistillConfig.hidden_weight must be >= 0, got {self.hidden_weight!r}")


@dataclass(frozen=True)
class DistillReport:
    steps: int
    seconds: float             # wall clock of the training loop
    cpu_seconds: float         # process CPU time of the training loop (all threads)
    loss_start: float          # mean loss over the first pass through the batches (before any update)
    loss_end: float            # mean loss over one pass after training
    masked_layers: int         # layers whose sparsity was held fixed
    history: Tuple[Tuple[int, float], ...]  # (step, training loss) every few steps


# ---- masks and the compressed structure -------------------------------------------------------

def _slot_columns(module) -> Tuple[torch.Tensor, torch.Tensor]:
    """(rows [S, nnz], cols [S, nnz]) of every stored value of a HiNMLinear, in original
    coordinates; padding slots get row -1."""
    state = module.sparse_state()
    idx = state["indices"].long()
    cfg = module.config
    n, m = int(cfg.n), int(cfg.m)
    pos = (torch.arange(idx.shape[1]) // n * m).unsqueeze(0) + idx
    if module.kind == "nm":
        rows = torch.arange(idx.shape[0]).unsqueeze(1).expand_as(idx)
        return rows, pos
    col_idx = state["col_idx"].long()
    slots, tiles = idx.shape[0], col_idx.shape[0]
    tile_of = torch.arange(slots) // (slots // tiles)
    cols = col_idx[tile_of.unsqueeze(1), pos]
    row_perm = state["row_perm"].long()
    slot_rows = torch.full((slots,), -1, dtype=torch.long)
    slot_rows[: row_perm.numel()] = row_perm
    return slot_rows.unsqueeze(1).expand_as(idx), cols


@dataclass
class _Masked:
    name: str
    linear: torch.nn.Linear
    mask: torch.Tensor                  # bool [out, in]
    original: Optional[torch.nn.Module] = None   # the HiNMLinear it replaces
    slots: Optional[Tuple[torch.Tensor, torch.Tensor]] = None

    def apply_mask(self) -> None:
        with torch.no_grad():
            self.linear.weight.mul_(self.mask)

    def restore(self) -> torch.nn.Module:
        if self.original is None:
            self.apply_mask()
            return self.linear
        from .nn import HiNMLinear, container_from_state

        rows, cols = self.slots
        state = dict(self.original.sparse_state())
        w = self.linear.weight.detach()
        real = rows >= 0
        values = torch.zeros(rows.shape, dtype=torch.float32)
        values[real] = w[rows[real], cols[real]].float()
        state["values"] = values.to(state["values"].dtype)
        bias = None if self.linear.bias is None else self.linear.bias.detach()
        return HiNMLinear.from_container(container_from_state(self.original.kind, state), bias)


def _masked_layers(model: torch.nn.Module) -> List[_Masked]:
    from .nn import HiNMLinear
    from .sparsify import _set_module

    out = []
    for name, mod in list(model.named_modules()):
        if isinstance(mod, HiNMLinear):
            rows, cols = _slot_columns(mod)
            mask = torch.zeros(mod.out_features, mod.in_features, dtype=torch.bool)
            real = rows >= 0
            mask[rows[real], cols[real]] = True
            lin = mod.to_linear()
            out.append(_Masked(name, lin, mask, mod, (rows, cols)))
            _set_module(model, name, lin)
        elif isinstance(mod, torch.nn.Linear):
            mask = mod.weight.detach() != 0
            if not bool(mask.all()):
                out.append(_Masked(name, mod, mask))
    return out


# ---- loss -------------------------------------------------------------------------------------

def _rel_sq(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return ((a - b) ** 2).sum() / (b ** 2).sum().clamp_min(1e-12)


def distill_loss(student_out: Any, teacher_out: Any, hidden_weight: float = 1.0) -> torch.Tensor:
    """The distillation loss between two outputs (see the module docstring)."""
    if isinstance(teacher_out, torch.Tensor):
        return _rel_sq(student_out.float(), teacher_out.float())
    if isinstance(teacher_out, dict) and "sentence_embedding" in teacher_out:
        s, t = student_out["sentence_embedding"].float(), teacher_out["sentence_embedding"].float()
        loss = (1 - torch.nn.functional.cosine_similarity(s, t, dim=-1)).mean()
        if hidden_weight and "token_embeddings" in teacher_out:
            real = teacher_out.get("attention_mask")
            hs, ht = student_out["token_embeddings"].float(), teacher_out["token_embeddings"].float()
            if real is not None:
                hs, ht = hs[real.bool()], ht[real.bool()]
            loss = loss + hidden_weight * _rel_sq(hs, ht)
        return loss
    if isinstance(teacher_out, dict) and isinstance(teacher_out.get("last_hidden_state"), torch.Tensor):
        return _rel_sq(student_out["last_hidden_state"].float(), teacher_out["last_hidden_state"].float())
    if isinstance(teacher_out, (tuple, list)) and teacher_out and isinstance(teacher_out[0], torch.Tensor):
        return _rel_sq(student_out[0].float(), teacher_out[0].float())
    raise ValueError("distill: the model's output must be a tensor, a tuple starting with one, or a "
                     f"sentence-transformers dict with 'sentence_embedding'; got {type(teacher_out).__name__}")


def _detach(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.detach()
    if isinstance(x, dict):
        return {k: _detach(v) for k, v in x.items()}
    if isinstance(x, (tuple, list)):
        return type(x)(_detach(v) for v in x)
    return x


# ---- training ---------------------------------------------------------------------------------

def _trainable(model: torch.nn.Module, train_embeddings: bool) -> List[torch.nn.Parameter]:
    frozen = set()
    if not train_embeddings:
        for mod in model.modules():
            if isinstance(mod, torch.nn.Embedding):
                frozen.update(id(p) for p in mod.parameters())
    params = []
    for p in model.parameters():
        p.requires_grad_(id(p) not in frozen and p.is_floating_point())
        if p.requires_grad:
            params.append(p)
    return params


def distill(student: torch.nn.Module, teacher: torch.nn.Module, batches: Sequence[Any],
            config: DistillConfig = DistillConfig(),
            forward: Optional[Callable[[torch.nn.Module, Any], Any]] = None,
            progress: bool = True) -> DistillReport:
    """Train `student` in place to match `teacher` on `batches` (cycled) under `config`; every
    sparsity mask stays fixed. Returns a DistillReport."""
    if not isinstance(config, DistillConfig):
        raise TypeError(f"config must be a DistillConfig, got {type(config).__name__}")
    if student is teacher:
        raise ValueError("distill: the student and the teacher are the same module (deep-copy the dense model first)")
    batches = check_batches(batches)
    forward = forward or default_forward
    torch.manual_seed(config.seed)
    teacher.eval()
    student.eval()
    targets: Dict[int, Any] = {}

    def target(i: int) -> Any:
        if i not in targets:
            with torch.no_grad():
                targets[i] = _detach(_call(forward, teacher, batches[i], i))
        return targets[i]

    flags = [(p, p.requires_grad) for p in student.parameters()]
    layers = _masked_layers(student)
    try:
        params = _trainable(student, config.train_embeddings)
        if not params:
            raise ValueError("distill: the student has no trainable floating-point parameters")
        opt = torch.optim.Adam(params, lr=config.lr)
        loss_start = _mean_loss(student, batches, target, forward, config)
        history, step, start, cpu_start = [], 0, time.perf_counter(), time.process_time()
        bar = _progress(config, progress)
        while True:
            if (config.steps is not None and step >= config.steps) or \
                    (config.seconds is not None and time.perf_counter() - start >= config.seconds) or \
                    (config.cpu_seconds is not None and time.process_time() - cpu_start >= config.cpu_seconds):
                break
            i = step % len(batches)
            loss = distill_loss(_call(forward, student, batches[i], i), target(i), config.hidden_weight)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"distill: the loss became {float(loss)} at step {step} (lower lr)")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            for layer in layers:
                layer.apply_mask()
            step += 1
            if step % 10 == 0 or step == 1:
                history.append((step, float(loss.detach())))
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{float(loss.detach()):.4f}")
        if bar is not None:
            bar.close()
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
        loss_end = _mean_loss(student, batches, target, forward, config)
    finally:
        _restore(student, layers)
        for p, flag in flags:
            p.requires_grad_(flag)
    log.info("hinm.distill: %d steps in %.0f s, loss %.4f -> %.4f", step, seconds, loss_start, loss_end)
    return DistillReport(step, seconds, cpu_seconds, loss_start, loss_end, len(layers), tuple(history))


def _call(forward, model, batch, index):
    try:
        return forward(model, batch)
    except (ValueError, TypeError, RuntimeError) as e:
        raise ValueError(f"distill batch {index}: the model's forward failed: {type(e).__name__}: {e}") from None


def _mean_loss(student, batches, target, forward, config) -> float:
    with torch.no_grad():
        total = sum(float(distill_loss(_call(forward, student, b, i), target(i), config.hidden_weight))
                    for i, b in enumerate(batches))
    return total / len(batches)


def _restore(student: torch.nn.Module, layers: List[_Masked]) -> None:
    from .sparsify import _set_module

    for layer in layers:
        module = layer.restore()
        if module is not layer.linear:
            _set_module(student, layer.name, module)


def _progress(config: DistillConfig, enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=config.steps, desc="distill", unit="step", leave=False)
