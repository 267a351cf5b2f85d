"""Pure schedule arithmetic of the N:M training recipes (Kao et al. 2022, PGF 2024).

Steps are optimizer steps. Global step g runs in one of three phases:
  [0, dense)                        dense: no mask
  [dense, total - finetune)         sparse: mask decay β(t) and/or structure frames, t = g - dense
  [total - finetune, total)         fine-tune: hard mask (β = 0) with the target pattern
Unlike the public PGF code, t starts at 0 on the first sparse step (its dense-phase offset was
100x too small) and the fine-tune phase really forces β = 0."""

from __future__ import annotations

import dataclasses
import math
from typing import List, Optional, Tuple, Union

from ..pattern import HiNMConfig, NMConfig

Config = Union[NMConfig, HiNMConfig]
BETA_SCHEDULES = ("linear", "exp", "step")
STRUCTURE_KINDS = ("stepwise", "geometric")


def check_schedule(schedule: str, decay: float) -> None:
    if schedule not in BETA_SCHEDULES:
        raise ValueError(f"schedule must be one of {BETA_SCHEDULES}, got {schedule!r}")
    if not (isinstance(decay, (int, float)) and math.isfinite(decay) and decay >= 0):
        raise ValueError(f"decay must be a finite number >= 0, got {decay!r}")


def beta(schedule: str, decay: float, t: int) -> float:
    """Weight kept on pruned elements t steps into the sparse phase:
    linear max(0, 1 - decay·t), exp exp(-decay·t), step 0 (hard mask, i.e. STE)."""
    check_schedule(schedule, decay)
    if t < 0:
        raise ValueError(f"t must be >= 0, got {t}")
    if schedule == "linear":
        return max(0.0, 1.0 - decay * t)
    if schedule == "exp":
        return math.exp(-decay * t)
    return 0.0


def _with_nm(config: Config, n: int, m: int) -> Config:
    return dataclasses.replace(config, n=n, m=m)


def structure_patterns(config: Config, kind: str) -> List[Config]:
    """The frame patterns of sparse-structure decay, ending at `config` (for HiNM the n:m part
    decays; v and the vector density stay).
    stepwise:  (M-1):M, M/2:M, M/4:M, ..., N:M   (log2(M/N)+1 frames; M/N a power of two)
    geometric: 8N:8M, 4N:4M, 2N:2M, N:M          (4 frames, constant density)"""
    n, m = config.n, config.m
    if kind == "stepwise":
        ratio = m // n
        if m % n or ratio & (ratio - 1):
            raise ValueError(f"stepwise structure decay needs M/N to be a power of two, got {n}:{m}")
        frames = ratio.bit_length()                   # log2(M/N) + 1
        counts = [m - 1] + [m >> i for i in range(1, frames)]
        return [_with_nm(config, c, m) for c in counts]
    if kind == "geometric":
        try:
            return [_with_nm(config, n << s, m << s) for s in (3, 2, 1, 0)]
        except ValueError as e:
            raise ValueError(f"geometric structure decay of {config}: {e}") from None
    raise ValueError(f"structure must be one of {STRUCTURE_KINDS} or None, got {kind!r}")


def structure_frames(config: Config, kind: str, dense_steps: int, sparse_steps: int) -> List[Tuple[int, Config]]:
    """(first global step, pattern) of each frame: the sparse window of `sparse_steps` steps after
    `dense_steps` is cut into K equal frames starting at dense + floor(i·sparse/K)."""
    patterns = structure_patterns(config, kind)
    k = len(patterns)
    if sparse_steps < k:
        raise ValueError(f"{kind} structure decay to {config} has {k} frames but the sparse phase "
                         f"has only {sparse_steps} steps")
    return [(dense_steps + i * sparse_steps // k, p) for i, p in enumerate(patterns)]


@dataclasses.dataclass(frozen=True)
class Phases:
    """Phase boundaries and schedules of one recipe; `at(g)` gives (pattern or None, β)."""

    config: Config
    schedule: str = "step"
    decay: float = 0.0
    dense_steps: int = 0
    finetune_steps: int = 0
    total_steps: Optional[int] = None
    structure: Optional[str] = None

    def __post_init__(self) -> None:
        check_schedule(self.schedule, self.decay)
        for name in ("dense_steps", "finetune_steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
        if self.total_steps is None:
            if self.finetune_steps or self.structure:
                raise ValueError("total_steps is required with finetune_steps > 0 or a structure decay")
        elif not isinstance(self.total_steps, int) or self.total_steps <= self.dense_steps + self.finetune_steps:
            raise ValueError(f"total_steps={self.total_steps!r} must be an integer > dense_steps + finetune_steps "
                             f"= {self.dense_steps + self.finetune_steps}")
        if self.structure is not None:
            structure_frames(self.config, self.structure, self.dense_steps, self.sparse_steps)

    @property
    def sparse_steps(self) -> Optional[int]:
        if self.total_steps is None:
            return None
        return self.total_steps - self.dense_steps - self.finetune_steps

    @property
    def finetune_start(self) -> Optional[int]:
        return None if self.total_steps is None else self.total_steps - self.finetune_steps

    def frames(self) -> List[Tuple[int, Config]]:
        if self.structure is None:
            return [(self.dense_steps, self.config)]
        return structure_frames(self.config, self.structure, self.dense_steps, self.sparse_steps)

    def at(self, g: int) -> Tuple[Optional[Config], float]:
        """(pattern, β) for the forward pass of global step g; pattern None means dense."""
        if g < self.dense_steps:
            return None, 1.0
        if self.finetune_start is not None and g >= self.finetune_start:
            return self.config, 0.0
        pattern = [p for start, p in self.frames() if start <= g][-1]
        return pattern, beta(self.schedule, self.decay, g - self.dense_steps)
