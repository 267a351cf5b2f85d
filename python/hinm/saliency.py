"""Saliency: how much each weight matters, the score every mask and permutation search maximises.

- "magnitude":  |W|
- "activation": |W_ij|·‖x_j‖ (Wanda), ‖x_j‖ over the calibration inputs of the layer
- "obs":        |W_ij| / sqrt([H⁻¹]_jj), H = XᵀX + damping (the optimal-brain-surgeon cost of removing
                W_ij alone, square-rooted so that it adds up like the other two)"""

from __future__ import annotations

from typing import Optional

import torch

from .calibration import LayerStats

SALIENCIES = ("magnitude", "activation", "obs")


def damped(hessian: torch.Tensor, damp: float) -> torch.Tensor:
    """H + damp·mean(diag H)·I, with dead inputs (zero diagonal) given a unit diagonal so that H
    stays invertible."""
    h = hessian.clone()
    diag = h.diagonal()
    dead = diag <= 0
    diag[dead] = 1.0
    mean = float(diag.mean()) if diag.numel() else 1.0
    diag += damp * mean
    return h


def saliency(weight: torch.Tensor, kind: str, stats: Optional[LayerStats] = None, damp: float = 0.01) -> torch.Tensor:
    """float64 scores [R, K] for `weight` [R, K]."""
    if kind not in SALIENCIES:
        raise ValueError(f"saliency must be one of {', '.join(SALIENCIES)}, got {kind!r}")
    w = weight.detach().to(torch.float64).cpu().abs()
    if kind == "magnitude":
        return w
    if stats is None:
        raise ValueError(f"saliency={kind!r} needs calibration inputs")
    if stats.hessian.shape[0] != w.shape[1]:
        raise ValueError(f"calibration statistics have width {stats.hessian.shape[0]}, the weight {w.shape[1]}")
    if kind == "activation":
        return w * stats.col_norms
    hinv_diag = torch.cholesky_inverse(torch.linalg.cholesky(damped(stats.hessian, damp))).diagonal()
    return w / hinv_diag.clamp_min(1e-300).sqrt()
