"""A layer's sparsity *plan* in torch: which rows share a tile, which columns each tile keeps and in
what order, and the resulting mask. It follows the HiNM mask contract exactly (cpp/include/hinm/
hinm_format.hpp): tile column score = sum over the tile's rows, keep the Kt largest (ties to the
lower column), order kept columns by col_order[t], n:m over consecutive groups (ties to the lower
position). Reconstruction (reconstruct.py) walks the same plan column by column, so the plan also
lists each tile's *processing sequence*: its dropped columns first, then its kept columns in order.

Plain N:M is one tile of all rows keeping every column; "unstructured" is one tile whose mask is
the globally largest scores of the layer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

import torch

from .pattern import HiNMConfig, NMConfig


@dataclass(frozen=True)
class Unstructured:
    """Unstructured sparsity: keep the largest `density` fraction of each layer's scores."""

    sparsity: float = 0.75

    def __post_init__(self) -> None:
        if not 0.0 <= float(self.sparsity) < 1.0:
            raise ValueError(f"unstructured sparsity must be in [0, 1), got {self.sparsity!r}")

    @property
    def density(self) -> float:
        return 1.0 - float(self.sparsity)

    def __str__(self) -> str:
        return f"unstructured:{self.sparsity:g}"


AnyConfig = Union[NMConfig, HiNMConfig, Unstructured]


def parse_any_config(config) -> AnyConfig:
    """parse_config plus 'unstructured:0.75'."""
    from .pattern import parse_config

    if isinstance(config, Unstructured):
        return config
    if isinstance(config, str) and config.strip().lower().startswith("unstructured"):
        parts = config.strip().split(":")
        try:
            return Unstructured(float(parts[1]) if len(parts) == 2 else 0.75)
        except ValueError as e:
            raise ValueError(f"cannot parse {config!r} (expected e.g. 'unstructured:0.75'): {e}") from None
    return parse_config(config)


@dataclass(frozen=True, eq=False)
class Plan:
    """Structure of one [R, K] layer.

    row_perm [R]: slot s of the tiled matrix holds original row row_perm[s].
    col_orders [T, K]: the tile's input-channel order (HiNM contract) — or the N:M column order.
    seq [T, K]: processing order: the tile's dropped columns (ascending), then its kept ones in order.
    n_dropped: K - Kt (columns each tile drops); mask: bool [R, K] in original coordinates."""

    config: AnyConfig
    rows: int
    cols: int
    v: int
    row_perm: torch.Tensor
    col_orders: torch.Tensor
    seq: torch.Tensor
    n_dropped: int
    mask: torch.Tensor

    @property
    def tiles(self) -> int:
        return self.seq.shape[0]

    @property
    def group(self) -> tuple:
        """(n, m) of the N:M stage, or None for unstructured."""
        c = self.config
        return None if isinstance(c, Unstructured) else (c.n, c.m)

    def kept_column_mask(self) -> torch.Tensor:
        """bool [R, K]: True where the row's tile keeps the column (before n:m)."""
        keep = torch.zeros(self.tiles, self.cols, dtype=torch.bool)
        keep.scatter_(1, self.seq[:, self.n_dropped:], True)
        slots = keep.repeat_interleave(self.v, dim=0)
        out = torch.empty(self.rows, self.cols, dtype=torch.bool)
        out[self.row_perm] = slots[: self.rows]
        return out


def _topk_stable(x: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k largest along the last axis; ties go to the lower index."""
    return torch.sort(-x, dim=-1, stable=True).indices[..., :k]


def _to_slots(x: torch.Tensor, row_perm: torch.Tensor, slots: int) -> torch.Tensor:
    out = torch.zeros((slots,) + tuple(x.shape[1:]), dtype=x.dtype)
    out[: x.shape[0]] = x[row_perm]
    return out


def _from_slots(x: torch.Tensor, row_perm: torch.Tensor, rows: int) -> torch.Tensor:
    out = torch.empty((rows,) + tuple(x.shape[1:]), dtype=x.dtype)
    out[row_perm] = x[:rows]
    return out


def nm_group_mask(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """bool mask of the n largest in each group of m along the last axis (ties: lower position)."""
    shape = scores.shape
    g = scores.reshape(-1, m)
    keep = torch.zeros_like(g, dtype=torch.bool)
    keep.scatter_(1, _topk_stable(g, n), True)
    return keep.reshape(shape)


def make_plan(scores: torch.Tensor, config: AnyConfig, row_perm: Optional[torch.Tensor] = None,
              col_orders: Optional[torch.Tensor] = None) -> Plan:
    """The plan (and mask) for `scores` [R, K] under `config` and an optional permutation."""
    scores = scores.detach().to(torch.float64).cpu()
    r, k = scores.shape
    if not torch.isfinite(scores).all():
        raise ValueError("saliency scores contain NaN or infinity")
    if isinstance(config, Unstructured):
        keep_n = int(round(config.density * r * k))
        flat = torch.zeros(r * k, dtype=torch.bool)
        flat[_topk_stable(scores.reshape(-1), keep_n)] = True
        ident = torch.arange(k).unsqueeze(0)
        return Plan(config, r, k, r, torch.arange(r), ident, ident, 0, flat.reshape(r, k))
    if isinstance(config, NMConfig):
        if k % config.m:
            raise ValueError(f"input width {k} is not a multiple of m={config.m} for {config}")
        v, kt = r, k
    else:
        v, kt = config.v, config.kept_columns(k)
    t = -(-r // v)
    row_perm = torch.arange(r) if row_perm is None else torch.as_tensor(row_perm, dtype=torch.int64).cpu()
    if col_orders is None:
        col_orders = torch.arange(k).expand(t, k).clone()
    col_orders = torch.as_tensor(col_orders, dtype=torch.int64).cpu().reshape(-1, k)
    if col_orders.shape[0] == 1 and t > 1:
        col_orders = col_orders.expand(t, k).clone()
    _check_perm(row_perm, r, "row_perm")
    if col_orders.shape[0] != t:
        raise ValueError(f"col_orders has {col_orders.shape[0]} rows, expected {t} tiles")
    for i in range(t):
        _check_perm(col_orders[i], k, f"col_orders[{i}]")
    slot_scores = _to_slots(scores, row_perm, t * v).reshape(t, v, k)
    keep = torch.zeros(t, k, dtype=torch.bool)
    keep.scatter_(1, _topk_stable(slot_scores.sum(1), kt), True)
    kept_ordered = col_orders[keep.gather(1, col_orders)].reshape(t, kt)
    dropped = torch.arange(k).expand(t, k)[~keep].reshape(t, k - kt)
    seq = torch.cat([dropped, kept_ordered], dim=1)
    gathered = slot_scores.gather(2, kept_ordered.unsqueeze(1).expand(t, v, kt))
    group_keep = nm_group_mask(gathered, config.n, config.m)
    slot_mask = torch.zeros(t, v, k, dtype=torch.bool)
    slot_mask.scatter_(2, kept_ordered.unsqueeze(1).expand(t, v, kt), group_keep)
    mask = _from_slots(slot_mask.reshape(t * v, k), row_perm, r)
    return Plan(config, r, k, v, row_perm, col_orders, seq, k - kt, mask)


def _check_perm(p: torch.Tensor, size: int, name: str) -> None:
    if p.shape != (size,) or not torch.equal(torch.sort(p).values, torch.arange(size)):
        raise ValueError(f"{name} is not a permutation of range({size})")


def retained(scores: torch.Tensor, mask: torch.Tensor) -> float:
    """Kept score / total score."""
    s = scores.detach().to(torch.float64)
    total = float(s.sum())
    return float((s * mask).sum()) / total if total > 0 else 1.0


def compress_scores(plan: Plan, mask: torch.Tensor) -> torch.Tensor:
    """Scores under which the HiNM/N:M mask rule reproduces `mask` exactly with the plan's
    permutation: kept entries 3, other entries of kept columns 1, dropped columns 0 — so every
    kept column's tile sum beats every dropped one even when n:m left a kept column empty."""
    return (2.0 * mask.float() + plan.kept_column_mask().float()).contiguous()


def is_legal(plan: Plan, mask: torch.Tensor) -> bool:
    """True if `mask` satisfies the plan's structure: nothing outside kept columns and exactly n
    of every group of m kept columns (in tile order) per row; unstructured: the same count."""
    if isinstance(plan.config, Unstructured):
        return int(mask.sum()) == int(plan.mask.sum())
    if (mask & ~plan.kept_column_mask()).any():
        return False
    n, m = plan.group
    t, v, k = plan.tiles, plan.v, plan.cols
    slots = _to_slots(mask, plan.row_perm, t * v).reshape(t, v, k)
    kept = plan.seq[:, plan.n_dropped:]
    g = slots.gather(2, kept.unsqueeze(1).expand(t, v, kept.shape[1])).reshape(t, v, -1, m)
    real = torch.zeros(t * v, dtype=torch.bool)
    real[: plan.rows] = True
    counts = g.sum(-1).reshape(t * v, -1)[real]
    return bool((counts == n).all())
