"""`hinm bench`: HiNMLinear vs dense nn.Linear on this machine's CPU, for MiniLM/BERT-sized layers,
every figure a ratio against the dense layer timed in the same run."""

from __future__ import annotations

import json
import sys
from typing import Optional

import torch

SHAPES = [(384, 384), (1536, 384), (384, 1536), (3072, 768), (768, 3072)]
CONFIGS = ["hinm:v64:0.5:2:4", "hinm:v64:0.25:2:4", "2:4"]


def run_bench(quick: bool = False, out: Optional[str] = None) -> list:
    from . import get_num_threads
    from ._timing import matched_threads, time_forwards
    from .nn import HiNMLinear

    torch.manual_seed(0)
    matched_threads()  # hinm's kernels on torch's thread count
    shapes = SHAPES[:3] if quick else SHAPES
    batches = [32, 1024] if quick else [1, 32, 256, 1024]
    repeats = 5 if quick else 15
    rows = []
    sys.stdout.write(f"hinm bench: float32, {get_num_threads()} hinm threads, {torch.get_num_threads()} torch threads; "
                     "speedup = dense nn.Linear time / HiNMLinear time, same run, interleaved, best of "
                     f"{repeats}\n\n")
    sys.stdout.write("| out×in | tokens | dense ms | " + " | ".join(CONFIGS) + " |\n")
    sys.stdout.write("|---|---|---|" + "---|" * len(CONFIGS) + "\n")
    for r, k in shapes:
        dense = torch.nn.Linear(k, r)
        sparse = {c: HiNMLinear.from_dense(dense, c) for c in CONFIGS}
        for n in batches:
            x = torch.randn(n, k)
            t = time_forwards({"dense": dense, **sparse}, lambda m: m(x), repeats)
            t_dense = t["dense"].wall_min
            ratios = {c: t_dense / t[c].wall_min for c in sparse}
            rows.append(dict(shape=[r, k], tokens=n, dense_ms=1e3 * t_dense, speedup=ratios))
            sys.stdout.write(f"| {r}×{k} | {n} | {1e3 * t_dense:.3f} | "
                             + " | ".join(f"{ratios[c]:.2f}×" for c in CONFIGS) + " |\n")
    if out:
        with open(out, "w") as f:
            json.dump(rows, f, indent=1)
    return rows
