"""The engine shared by MaskDecay, StructureDecay and SRSTE: per optimizer step it picks the
pattern and β of the step (schedules.Phases), recomputes the masks from the current dense weights
when due, and pushes scale = m + (1 - m)·β and refine = λ·(1 - m) to the attached weights."""

from __future__ import annotations

import logging
import math
from typing import Any, Dict, List, Mapping, Optional, Union

import torch
from torch import nn

from ..hinm_format import compress
from ..pattern import HiNMConfig, parse_config
from ._attach import LayerFilter, ModuleTarget, SwapTarget, select_modules, select_params
from ._masks import check_layer, compress_scores, layer_mask, weight_matrix
from .schedules import Phases

log = logging.getLogger("hinm")
STATE_VERSION = 1


class SparseRecipe:
    """Base class; use MaskDecay, StructureDecay or SRSTE."""

    def __init__(self, target: Union[nn.Module, torch.optim.Optimizer], phases: Phases, *, lambda_w: float = 0.0,
                 mask_every: int = 1, layers: LayerFilter = None, params: Any = None) -> None:
        if not isinstance(mask_every, int) or isinstance(mask_every, bool) or mask_every < 1:
            raise ValueError(f"mask_every must be an integer >= 1, got {mask_every!r}")
        if not (isinstance(lambda_w, (int, float)) and math.isfinite(lambda_w) and lambda_w >= 0):
            raise ValueError(f"lambda_w must be a finite number >= 0, got {lambda_w!r}")
        self.phases, self.lambda_w, self.mask_every = phases, float(lambda_w), mask_every
        self.config = phases.config
        self._hooks: List[Any] = []
        if isinstance(target, nn.Module):
            if params is not None:
                raise ValueError("params= selects optimizer parameters; with a module use layers=")
            chosen = select_modules(target, layers)
            self._check([(f"{n}.weight", m.weight) for n, m in chosen])
            self._targets: List[Union[ModuleTarget, SwapTarget]] = [ModuleTarget(f"{n}.weight", m) for n, m in chosen]
        elif isinstance(target, torch.optim.Optimizer):
            if layers is not None:
                raise ValueError("layers= selects module layers; with an optimizer use params=")
            chosen = select_params(target, params)
            self._check(chosen)
            self._targets = [SwapTarget(n, p) for n, p in chosen]
            self._hooks = [target.register_step_pre_hook(self._before_update),
                           target.register_step_post_hook(self._after_update)]
        else:
            raise TypeError(f"{type(self).__name__}: expected an nn.Module (parametrized) or a torch optimizer "
                            f"(step hooks), got {type(target).__name__}; a bare parameter list cannot change "
                            f"the forward pass")
        self._via_optimizer = isinstance(target, torch.optim.Optimizer)
        self._step = 0
        self._masks: List[Optional[torch.Tensor]] = [None] * len(self._targets)
        self._kept: List[Optional[torch.Tensor]] = [None] * len(self._targets)   # HiNM tile columns
        self._final: Optional[List[Any]] = None
        self._mask_pattern: Optional[str] = None
        self._finalized = False
        self._refresh()

    # ---- what each step does ------------------------------------------------------------
    def _check(self, named_weights) -> None:
        for _, pattern in self.phases.frames():
            for name, w in named_weights:
                check_layer(w, pattern, name)

    def _dense(self, target) -> torch.Tensor:
        return target.dense.detach()

    def _refresh(self) -> None:
        """Recompute the masks if due at the current step, then push scales."""
        pattern, _ = self.phases.at(self._step)
        if pattern is not None:
            due = (self._step - self.phases.dense_steps) % self.mask_every == 0
            if due or str(pattern) != self._mask_pattern:
                self._masks, self._kept = self._compute_masks(pattern)
                self._mask_pattern = str(pattern)
        self._push()

    def _compute_masks(self, pattern):
        pairs = [layer_mask(self._dense(t), pattern) for t in self._targets]
        return [m for m, _ in pairs], [k for _, k in pairs]

    def _push(self) -> None:
        pattern, beta = self.phases.at(self._step)
        for target, mask in zip(self._targets, self._masks):
            if pattern is None:
                target.set(None, None)
                continue
            dense = self._dense(target)
            scale = torch.where(mask, torch.ones_like(dense), torch.full_like(dense, beta))
            refine = (~mask).to(dense.dtype) * self.lambda_w if self.lambda_w else None
            target.set(scale, refine)

    def _advance(self) -> None:
        if self._finalized:
            raise RuntimeError(f"{type(self).__name__} was finalized; attach a new recipe to keep training")
        self._step += 1
        self._refresh()

    def _before_update(self, optimizer, args, kwargs) -> None:
        if not self._finalized:
            for t in self._targets:
                t.before_update()

    def _after_update(self, optimizer, args, kwargs) -> None:
        if not self._finalized:
            for t in self._targets:
                t.after_update()
            self._advance()

    # ---- public API -----------------------------------------------------------------------
    def step(self) -> None:
        """Advance one optimizer step (module mode: call right after optimizer.step())."""
        if self._via_optimizer:
            raise RuntimeError(f"{type(self).__name__} is attached to an optimizer and advances on its own "
                               f"with optimizer.step(); do not call step()")
        self._advance()

    @property
    def steps_done(self) -> int:
        return self._step

    @property
    def pattern(self):
        """Pattern of the current step (None while dense)."""
        return self.phases.at(self._step)[0]

    @property
    def beta(self) -> float:
        """β of the current step (1 while dense, 0 under a hard mask)."""
        return self.phases.at(self._step)[1]

    @property
    def masks(self) -> Dict[str, Optional[torch.Tensor]]:
        """Current keep-masks by weight name (None while dense)."""
        if self.pattern is None:
            return {t.name: None for t in self._targets}
        return {t.name: m for t, m in zip(self._targets, self._masks)}

    def _settings(self) -> Dict[str, Any]:
        p = self.phases
        return {"kind": type(self).__name__, "config": str(self.config), "schedule": p.schedule,
                "decay": float(p.decay), "dense_steps": p.dense_steps, "finetune_steps": p.finetune_steps,
                "total_steps": p.total_steps, "structure": p.structure, "lambda_w": self.lambda_w,
                "mask_every": self.mask_every, "weights": [t.name for t in self._targets]}

    def state_dict(self) -> Dict[str, Any]:
        """Everything needed, with the model's and optimizer's state dicts, to resume bit-exactly."""
        sd: Dict[str, Any] = {"version": STATE_VERSION, "settings": self._settings(), "step": self._step,
                              "mask_pattern": self._mask_pattern, "finalized": self._finalized,
                              "masks": {t.name: m.clone() for t, m in zip(self._targets, self._masks)
                                        if m is not None},
                              "kept": {t.name: k.clone() for t, k in zip(self._targets, self._kept)
                                       if k is not None}}
        if self._via_optimizer:
            sd["dense"] = {t.name: t.dense.clone() for t in self._targets}
        return sd

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if not isinstance(state, Mapping) or state.get("version") != STATE_VERSION:
            raise ValueError(f"not a {type(self).__name__} state dict of version {STATE_VERSION}")
        if state.get("settings") != self._settings():
            raise ValueError(f"{type(self).__name__} state dict was saved with other settings: "
                             f"{state.get('settings')} vs {self._settings()}")
        if state.get("finalized"):
            raise ValueError("cannot resume from a finalized recipe")
        step = state.get("step")
        if not isinstance(step, int) or step < 0:
            raise ValueError(f"state dict: bad step {step!r}")
        masks = [self._state_tensor(state, "masks", t, torch.bool) for t in self._targets]
        if self.phases.at(step)[0] is not None and any(m is None for m in masks):
            raise ValueError("state dict: masks are missing for a sparse step")
        kept = [self._kept_from_state(state, t) for t in self._targets]
        dense = [self._state_tensor(state, "dense", t, t.dense.dtype) for t in self._targets] \
            if self._via_optimizer else []
        if any(d is None for d in dense):
            raise ValueError("state dict: the dense weights of an optimizer-attached recipe are missing")
        for t, d in zip(self._targets, dense):
            t.dense.copy_(d)
        self._step, self._mask_pattern = step, state.get("mask_pattern")
        self._masks = masks if all(m is not None for m in masks) else [None] * len(self._targets)
        self._kept = kept
        self._push()

    def _state_tensor(self, state, field: str, target, dtype) -> Optional[torch.Tensor]:
        value = state.get(field, {}).get(target.name)
        if value is None:
            return None
        shape = tuple(self._dense(target).shape)
        if not isinstance(value, torch.Tensor) or tuple(value.shape) != shape or value.dtype != dtype:
            raise ValueError(f"state dict: {field}[{target.name!r}] must be a {dtype} tensor of shape {shape}")
        return value.to(self._dense(target).device)

    def _kept_from_state(self, state, target) -> Optional[torch.Tensor]:
        """The HiNM tile columns of the saved masks (None for N:M or before any mask)."""
        if not isinstance(self.config, HiNMConfig) or state.get("mask_pattern") is None:
            return None
        cfg = parse_config(str(state["mask_pattern"]))
        rows, cols = weight_matrix(self._dense(target)).shape
        shape = (-(-rows // cfg.v), cfg.kept_columns(cols))
        value = state.get("kept", {}).get(target.name)
        if not isinstance(value, torch.Tensor) or tuple(value.shape) != shape or value.dtype != torch.int32:
            raise ValueError(f"state dict: kept[{target.name!r}] must be an int32 tensor of shape {shape}")
        return value

    def finalize(self) -> Dict[str, torch.Tensor]:
        """Apply the hard target mask (β = 0) to the dense weights, detach the recipe, and return
        {weight name: hard-masked weight}. Biases are untouched. The masks in force are kept when
        they have the target pattern; otherwise they are computed now from the dense weights.
        compressed() then gives the NMTensor/HiNMTensor of each weight holding exactly these masks
        (conv weights as their [R, K] NHWC matrix, `hinm.training.weight_matrix(w)`)."""
        if self._finalized:
            raise RuntimeError(f"{type(self).__name__} was finalized already")
        if self._mask_pattern == str(self.config) and self.pattern is not None:
            masks, kept = self._masks, self._kept
        else:
            masks, kept = self._compute_masks(self.config)
        out = {}
        for target, mask in zip(self._targets, masks):
            dense = self._dense(target)
            hard = torch.where(mask, dense, torch.zeros_like(dense))
            target.detach(hard)
            out[target.name] = hard
        self._final = [(name, hard, mask, k) for (name, hard), mask, k in zip(out.items(), masks, kept)]
        for handle in self._hooks:
            handle.remove()
        self._finalized = True
        log.info("%s finalized %d weights at %s after %d steps", type(self).__name__, len(out), self.config,
                 self._step)
        return out

    def compressed(self) -> Dict[str, Any]:
        """After finalize(): {weight name: NMTensor or HiNMTensor} of the [R, K] weight matrices
        (conv: NHWC), holding exactly the final masks. Use this rather than hinm.compress(weight)
        for HiNM: |W| alone cannot tell a kept column that n:m emptied from a dropped one."""
        if self._final is None:
            raise RuntimeError(f"call {type(self).__name__}.finalize() before compressed()")
        out = {}
        for name, hard, mask, kept in self._final:
            matrix = weight_matrix(hard).contiguous()
            out[name] = compress(matrix, self.config, scores=compress_scores(mask, kept, self.config))
        return out
