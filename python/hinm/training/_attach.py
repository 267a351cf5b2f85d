"""How a recipe reaches the weights, without monkey-patching:

- a module: a torch.nn.utils.parametrize parametrization on each sparse layer's `weight`
  (the Parameter object stays the same, so optimizers built before or after keep working);
- an optimizer: step hooks swap each sparse parameter between its effective value (held in
  the parameter between steps, so any forward sees it) and its dense value (held by the recipe,
  restored just before the optimizer updates it).

Either way the forward uses W_eff = W ⊙ scale and the backward is straight-through plus the
SR-STE term: dL/dW = dL/dW_eff + refine ⊙ W."""

from __future__ import annotations

from typing import Callable, Iterable, List, Optional, Tuple, Union

import torch
from torch import nn
from torch.nn.utils import parametrize

SPARSE_LAYER_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
LayerFilter = Union[None, Iterable[str], Callable[[str, nn.Module], bool]]


class _ScaledSTE(torch.autograd.Function):
    """forward W ⊙ scale; backward g (+ refine ⊙ W): straight-through, SR-STE when refine is set."""

    @staticmethod
    def forward(ctx, weight, scale, refine):
        ctx.save_for_backward(weight if refine is not None else None, refine)
        return weight * scale

    @staticmethod
    def backward(ctx, grad):
        weight, refine = ctx.saved_tensors
        if refine is not None:
            grad = grad + refine * weight
        return grad, None, None


class SparseWeight(nn.Module):
    """The parametrization: identity while `scale` is None (dense phase)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("scale", None, persistent=False)
        self.register_buffer("refine", None, persistent=False)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if self.scale is None:
            return weight
        return _ScaledSTE.apply(weight, self.scale, self.refine)


class ModuleTarget:
    """One parametrized layer weight."""

    def __init__(self, name: str, module: nn.Module) -> None:
        self.name, self.module, self.param = name, module, SparseWeight()
        parametrize.register_parametrization(module, "weight", self.param)

    @property
    def dense(self) -> torch.Tensor:
        return self.module.parametrizations.weight.original

    def set(self, scale: Optional[torch.Tensor], refine: Optional[torch.Tensor]) -> None:
        self.param.scale, self.param.refine = scale, refine

    def detach(self, hard: torch.Tensor) -> None:
        """Remove the parametrization; the original Parameter comes back holding `hard`."""
        parametrize.remove_parametrizations(self.module, "weight", leave_parametrized=False)
        with torch.no_grad():
            self.module.weight.copy_(hard)


class SwapTarget:
    """One optimizer parameter; the recipe keeps its dense value."""

    def __init__(self, name: str, param: torch.Tensor) -> None:
        self.name, self.param = name, param
        self.dense = param.detach().clone()
        self.scale: Optional[torch.Tensor] = None
        self.refine: Optional[torch.Tensor] = None

    def set(self, scale: Optional[torch.Tensor], refine: Optional[torch.Tensor]) -> None:
        self.scale, self.refine = scale, refine
        with torch.no_grad():
            self.param.copy_(self.dense if scale is None else self.dense * scale)

    def before_update(self) -> None:
        with torch.no_grad():
            if self.refine is not None and self.param.grad is not None:
                self.param.grad.add_(self.refine * self.dense)
            self.param.copy_(self.dense)

    def after_update(self) -> None:
        with torch.no_grad():
            self.dense.copy_(self.param)

    def detach(self, hard: torch.Tensor) -> None:
        with torch.no_grad():
            self.param.copy_(hard)


def _wanted(layers: LayerFilter) -> Callable[[str, nn.Module], bool]:
    if layers is None:
        return lambda name, module: isinstance(module, SPARSE_LAYER_TYPES)
    if callable(layers):
        return layers
    names = set(layers)
    return lambda name, module: name in names


def select_modules(model: nn.Module, layers: LayerFilter) -> List[Tuple[str, nn.Module]]:
    """(name, module) of the layers to sparsify; raises before anything is attached."""
    want = _wanted(layers)
    chosen = [(n, m) for n, m in model.named_modules() if n and want(n, m)]
    if layers is not None and not callable(layers):
        missing = set(layers) - {n for n, _ in chosen}
        if missing:
            raise ValueError(f"layers not found in the model: {sorted(missing)}")
    for name, module in chosen:
        w = getattr(module, "weight", None)
        if not isinstance(w, torch.Tensor):
            raise ValueError(f"layer {name!r} ({type(module).__name__}) has no weight tensor")
        if parametrize.is_parametrized(module, "weight"):
            raise ValueError(f"{name}.weight is already parametrized (is a recipe attached already?)")
    if not chosen:
        raise ValueError("no sparse layers selected (by default every Linear/Conv1d/2d/3d module)")
    return chosen


def select_params(optimizer: torch.optim.Optimizer,
                  params: Optional[Iterable[torch.Tensor]]) -> List[Tuple[str, torch.Tensor]]:
    """(name, parameter) to sparsify; names are positions in the optimizer ("param3")."""
    in_optimizer = [p for group in optimizer.param_groups for p in group["params"]]
    if params is None:
        wanted = {id(p) for p in in_optimizer if p.dim() >= 2}
    else:
        wanted = {id(p) for p in params}
        if wanted - {id(p) for p in in_optimizer}:
            raise ValueError("params: every parameter must belong to the optimizer")
    chosen = [(f"param{i}", p) for i, p in enumerate(in_optimizer) if id(p) in wanted]
    if not chosen:
        raise ValueError("no sparse parameters selected (by default every parameter with >= 2 dimensions)")
    return chosen
