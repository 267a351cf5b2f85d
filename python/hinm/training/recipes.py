"""The three N:M / HiNM training recipes. Each attaches to an nn.Module (parametrizations on every
Linear/Conv weight, or the `layers` chosen; call step() after each optimizer.step()) or to a torch
optimizer (step hooks on its >= 2-D parameters, or the `params` chosen; it then advances by itself).
Biases and other parameters are never touched. finalize() leaves hard-masked weights for
hinm.compress / hinm.compress_nm."""

from __future__ import annotations

from typing import Any, Optional, Union

import torch
from torch import nn

from ..pattern import HiNMConfig, NMConfig, parse_config
from ._attach import LayerFilter
from ._recipe import SparseRecipe
from .schedules import Phases

Target = Union[nn.Module, torch.optim.Optimizer]
ConfigLike = Union[str, NMConfig, HiNMConfig]


class MaskDecay(SparseRecipe):
    """Decaying pruning mask (Kao et al. 2022; PGF's MdGf): the forward uses
    W ⊙ (m + (1 - m)·β(t)) with m the N:M (or HiNM) mask of the current |W|, recomputed every
    `mask_every` steps; the backward is straight-through. β is linear max(0, 1 - decay·t),
    exp exp(-decay·t) or step 0 (plain STE), t counted from the first sparse step.
    Phases: `dense_steps` dense, then decay, then `finetune_steps` with β = 0 (needs total_steps).
    `structure="stepwise"|"geometric"` adds sparse-structure decay (see StructureDecay)."""

    def __init__(self, model_or_optimizer: Target, config: ConfigLike, schedule: str = "linear",
                 decay: float = 2e-4, dense_steps: int = 0, finetune_steps: int = 0, mask_every: int = 1,
                 total_steps: Optional[int] = None, structure: Optional[str] = None, *,
                 layers: LayerFilter = None, params: Any = None) -> None:
        phases = Phases(parse_config(config), schedule, decay, dense_steps, finetune_steps, total_steps, structure)
        super().__init__(model_or_optimizer, phases, mask_every=mask_every, layers=layers, params=params)


class StructureDecay(SparseRecipe):
    """Decaying sparse structure (Kao et al. 2022; PGF's SdGf): the sparse phase is cut into equal
    frames of increasing sparsity ending at `config`:
      structure="stepwise":  (M-1):M → M/2:M → … → N:M
      structure="geometric": 8N:8M → 4N:4M → 2N:2M → N:M (constant density)
    For HiNM the n:m part decays; v and the vector density stay. Inside a frame the mask is hard
    (schedule="step"); schedule="linear"|"exp" combines it with mask decay (β over the whole
    sparse phase). The fine-tune phase uses the target pattern with β = 0."""

    def __init__(self, model_or_optimizer: Target, config: ConfigLike, *, total_steps: int,
                 structure: str = "stepwise", schedule: str = "step", decay: float = 2e-4, dense_steps: int = 0,
                 finetune_steps: int = 0, mask_every: int = 1, layers: LayerFilter = None,
                 params: Any = None) -> None:
        if structure is None:
            raise ValueError("StructureDecay needs structure='stepwise' or 'geometric' (use MaskDecay without one)")
        phases = Phases(parse_config(config), schedule, decay, dense_steps, finetune_steps, total_steps, structure)
        super().__init__(model_or_optimizer, phases, mask_every=mask_every, layers=layers, params=params)


class SRSTE(SparseRecipe):
    """Sparse-refined straight-through estimator (Zhou et al. 2021): the forward uses W ⊙ m with m
    recomputed every `mask_every` steps from |W|; the gradient reaching the optimizer is
    dL/dW̃ + lambda_w·(1 - m) ⊙ W, so plain SGD does W ← W - γ(dL/dW̃ + λ(1 - m) ⊙ W).
    lambda_w=0 gives plain STE. `dense_steps` dense steps may come first."""

    def __init__(self, model_or_optimizer: Target, config: ConfigLike, lambda_w: float = 2e-4,
                 dense_steps: int = 0, mask_every: int = 1, *, layers: LayerFilter = None,
                 params: Any = None) -> None:
        phases = Phases(parse_config(config), "step", 0.0, dense_steps)
        super().__init__(model_or_optimizer, phases, lambda_w=lambda_w, mask_every=mask_every, layers=layers,
                         params=params)
