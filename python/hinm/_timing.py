"""Timing several models' forward on the same inputs in one run, fairly: same threads for torch
and hinm, one warm-up each, repetitions interleaved (A B C A B C ...) so that a burst of load on
a shared machine hits every model alike, and both wall and process CPU time per repetition.

The minimum over repetitions is the figure to compare (the least disturbed run of a
deterministic workload); the median and the CPU time are kept next to it."""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional

import torch


@dataclass(frozen=True)
class ForwardTiming:
    """Seconds of one forward: wall min/median over repetitions, process CPU time (all threads) min."""

    wall_min: float
    wall_median: float
    cpu_min: float
    repeats: int

    def to_dict(self) -> dict:
        return asdict(self)


def matched_threads(threads: Optional[int] = None) -> int:
    """Give hinm's kernels torch's intra-op thread count (or set both to `threads`); returns it."""
    from . import set_num_threads

    if threads is not None:
        torch.set_num_threads(int(threads))
    n = torch.get_num_threads()
    set_num_threads(n)
    return n


def _cpu_seconds() -> float:
    return time.process_time()  # the whole process: every kernel thread counts


def time_forwards(models: Mapping[str, Any], run: Callable[[Any], Any], repeats: int = 7,
                  threads: Optional[int] = None) -> Dict[str, ForwardTiming]:
    """Time run(model) for every model, interleaved, under torch.inference_mode."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    matched_threads(threads)
    walls: Dict[str, List[float]] = {k: [] for k in models}
    cpus: Dict[str, List[float]] = {k: [] for k in models}
    with torch.inference_mode():
        for model in models.values():
            run(model)  # warm-up: lazy caches, allocator, thread pool
        for _ in range(repeats):
            for key, model in models.items():
                c, t = _cpu_seconds(), time.perf_counter()
                run(model)
                walls[key].append(time.perf_counter() - t)
                cpus[key].append(_cpu_seconds() - c)
    return {k: ForwardTiming(min(walls[k]), statistics.median(walls[k]), min(cpus[k]), repeats) for k in models}
