"""Masks for training: |W| scores of a layer weight, laid out as the [R, K] matrix the sparse
formats use, masked by the C++ core.

Conv weights [O, C, *kernel] are grouped along the input channel (NHWC order, as SR-STE, PGF and
Apex ASP do): the matrix is weight.permute(0, 2, ..., 1).reshape(O, -1)."""

from __future__ import annotations

from typing import Optional, Tuple, Union

import torch

from ..hinm_format import hinm_mask
from ..nm import nm_mask
from ..pattern import HiNMConfig, NMConfig

Config = Union[NMConfig, HiNMConfig]


def weight_matrix(weight: torch.Tensor) -> torch.Tensor:
    """The [R, K] matrix view of a Linear ([O, K]) or Conv ([O, C, *kernel]) weight, in the
    layout masks are computed in and `hinm.compress` expects (input channel fastest)."""
    if weight.dim() < 2:
        raise ValueError(f"a sparse weight needs at least 2 dimensions, got shape {tuple(weight.shape)}")
    if weight.dim() == 2:
        return weight
    return weight.movedim(1, -1).reshape(weight.shape[0], -1)


def _from_matrix(matrix: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Inverse of weight_matrix: the [R, K] matrix back in the shape of `like`."""
    if like.dim() == 2:
        return matrix
    o, c, *kernel = like.shape
    return matrix.reshape(o, *kernel, c).movedim(-1, 1)


def check_layer(weight: torch.Tensor, config: Config, name: str) -> None:
    """Raises ValueError (naming the layer) unless `config` can mask this weight."""
    if weight.dim() < 2:
        raise ValueError(f"{name}: a sparse weight needs at least 2 dimensions, got shape {tuple(weight.shape)}")
    k = weight_matrix(weight).shape[1]
    if isinstance(config, HiNMConfig):
        try:
            config.kept_columns(k)
        except ValueError as e:
            raise ValueError(f"{name}: {e}") from None
    elif k % config.m:
        raise ValueError(f"{name}: input width {k} is not a multiple of m={config.m} for the {config} pattern")


def layer_mask(weight: torch.Tensor, config: Config) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """(mask, kept): the boolean keep-mask (shape of `weight`, on its device) of the largest-|w|
    N:M or HiNM selection (ties go to the lower index, the C++ core's rule), and for HiNM the
    kept columns [T, Kt] of each tile of the weight matrix (None for N:M)."""
    scores = weight_matrix(weight.detach()).abs().to("cpu", torch.float32).contiguous()
    if isinstance(config, HiNMConfig):
        mask, kept = hinm_mask(scores, config)
    else:
        mask, kept = nm_mask(scores, config.n, config.m), None
    return _from_matrix(mask, weight).to(weight.device), kept


def compress_scores(mask: torch.Tensor, kept: Optional[torch.Tensor], config: Config) -> torch.Tensor:
    """float32 scores [R, K] under which hinm.compress selects exactly `mask` (a weight-shaped
    mask with HiNM tile columns `kept`): 2 on kept elements, +1 on every element of a kept column.
    |W| of the hard-masked weight is not enough for HiNM: a kept column whose elements were all
    pruned by n:m sums to 0, ties with the dropped columns, and may lose to one of them."""
    scores = weight_matrix(mask).to("cpu", torch.float32) * 2
    if kept is not None:
        r, v = scores.shape[0], config.v
        for t in range(kept.shape[0]):
            scores[t * v:min(r, (t + 1) * v), kept[t].long()] += 1
    return scores.contiguous()
