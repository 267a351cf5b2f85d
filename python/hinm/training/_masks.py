"""Masks for training: |W| scores of a layer weight, laid out as the [R, K] matrix the sparse
formats use, masked by the C++ core.

Conv weights [O, C, *kernel] are grouped along the input channel (NHWC order, as SR-STE, PGF and
Apex ASP do): the matrix is weight.permute(0, 2, ..., 1).reshape(O, -1)."""

from __future__ import annotations

from typing import Union

import torch

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


def _hinm_matrix_mask(scores: torch.Tensor, config: HiNMConfig) -> torch.Tensor:
    # The one place HiNM configs are masked. Interim torch version of the HiNM mask contract
    # (COMMON.md) until hinm.hinm_mask is on main: tiles of v rows keep the Kt columns with the
    # largest summed score (ties: lower column), then n:m along each row over the kept columns.
    r, k = scores.shape
    v, kt = config.v, config.kept_columns(k)
    tiles = -(-r // v)
    padded = torch.zeros(tiles * v, k, dtype=torch.float64)
    padded[:r] = scores
    col_sum = padded.view(tiles, v, k).sum(dim=1)
    order = torch.sort(col_sum, dim=1, descending=True, stable=True).indices[:, :kt]
    kept = torch.sort(order, dim=1).values                                 # [T, Kt], ascending
    gathered = torch.gather(padded.view(tiles, v, k), 2, kept[:, None, :].expand(tiles, v, kt))
    inner = nm_mask(gathered.reshape(tiles * v, kt), config.n, config.m).view(tiles, v, kt)
    mask = torch.zeros(tiles, v, k, dtype=torch.bool)
    mask.scatter_(2, kept[:, None, :].expand(tiles, v, kt), inner)
    return mask.view(tiles * v, k)[:r]


def layer_mask(weight: torch.Tensor, config: Config) -> torch.Tensor:
    """Boolean keep-mask (shape of `weight`, on its device) of the largest-|w| N:M or HiNM
    selection; ties go to the lower index (the C++ core's rule)."""
    scores = weight_matrix(weight.detach()).abs().to("cpu", torch.float32)
    if isinstance(config, HiNMConfig):
        mask = _hinm_matrix_mask(scores, config)
    else:
        mask = nm_mask(scores.contiguous(), config.n, config.m)
    return _from_matrix(mask, weight).to(weight.device)
