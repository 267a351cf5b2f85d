"""Small-batch products and per-call overhead: hinm.linear at batch 1..4 vs the best dense
baseline (torch F.linear / numpy.matmul) timed in the same run, plain 2:4 and HiNM (v=64, 75% and
87.5%), float32 and float16 values; plus the cost of a tiny call (64x64, batch 1), which is
almost all Python, binding and thread-start overhead. Writes bench/results/bench_small_t<threads>[_cpu].json.

    python bench/bench_small.py [--threads 2] [--cpu-time] [--batches 1 4] [--quick]
"""

from __future__ import annotations

import argparse
import math

import common  # (pins BLAS threads before numpy is imported)

common.libgomp_default_spin()  # torch's dense baseline at its best (before hinm sets a short spin)

import numpy as np  # noqa: E402

import hinm  # noqa: E402

NM_SHAPES = [(768, 768), (3072, 768), (768, 3072), (4096, 4096)]
HINM_SHAPES = [(384, 384), (1536, 384), (384, 1536), (768, 3072), (3072, 768), (4096, 4096), (11008, 4096)]
SPARSITIES = {"75%": 0.5, "87.5%": 0.25}


def overhead_rows() -> list:
    rng = np.random.default_rng(1)
    w = rng.standard_normal((64, 64), dtype=np.float32)
    x = rng.standard_normal((1, 64), dtype=np.float32)
    y = np.empty((1, 64), np.float32)
    nm = hinm.compress_nm(w, 2, 4)
    hw = hinm.compress(w, hinm.HiNMConfig(32, 0.5, 2, 4))
    calls = {"numpy.matmul": lambda: np.matmul(x, w.T), "nm out=": lambda: hinm.linear(x, nm, out=y),
             "nm alloc": lambda: hinm.linear(x, nm), "hinm out=": lambda: hinm.linear(x, hw, out=y)}
    try:
        import torch

        tx, ty = torch.from_numpy(x), torch.from_numpy(y)
        calls["nm torch out="] = lambda: hinm.linear(tx, nm, out=ty)
        calls["nm torch alloc"] = lambda: hinm.linear(tx, nm)
    except ImportError:
        pass
    return [{"call": name, "us": min(common.timeit(fn, repeats=5, min_time=0.02) for _ in range(3)) * 1e6}
            for name, fn in calls.items()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=common.THREADS)
    ap.add_argument("--cpu-time", action="store_true", help="time with the CPU clock (use with --threads 1)")
    ap.add_argument("--batches", type=int, nargs="*")
    ap.add_argument("--quick", action="store_true", help="batch 1 only, no 4096-row shapes")
    args = ap.parse_args()
    common.setup_threads(args.threads)
    batches = common.batches(args.batches, [1] if args.quick else [1, 2, 4])
    big = (lambda s: s[0] * s[1] < 4096 * 4096) if args.quick else (lambda s: True)
    rng = np.random.default_rng(0)
    rows = []
    for r, k in filter(big, NM_SHAPES):
        w = rng.standard_normal((r, k), dtype=np.float32)
        weights = {"f32": hinm.compress_nm(w, 2, 4), "f16": hinm.compress_nm(w.astype(np.float16), 2, 4)}
        rows += measure(rng, w, weights, "2:4", batches)
    for r, k in filter(big, HINM_SHAPES):
        w = rng.standard_normal((r, k), dtype=np.float32)
        for s, d in SPARSITIES.items():
            t = hinm.compress(w, hinm.HiNMConfig(64, d, 2, 4))
            rows += measure(rng, w, {"f32": t}, f"hinm {s}", batches)
    common.print_table(rows, ["kind", "shape", "batch", "dense_us", "f32_us", "f16_us", "vs_dense_f32", "vs_dense_f16"],
                       title=f"hinm.linear small batches vs best dense, {args.threads} threads"
                             + (" (CPU time)" if common.CPU_TIME else " (wall)"))
    summary = []
    for kind in sorted({row["kind"] for row in rows}):
        for b in batches:
            sel = [row["vs_dense_f32"] for row in rows if row["kind"] == kind and row["batch"] == b]
            summary.append({"kind": kind, "batch": b, "geomean_vs_dense_f32": math.exp(np.mean(np.log(sel))),
                            "min_vs_dense_f32": min(sel)})
    common.print_table(summary, ["kind", "batch", "geomean_vs_dense_f32", "min_vs_dense_f32"], title="summary over shapes")
    overhead = overhead_rows()
    common.print_table(overhead, ["call", "us"], title="per-call cost, 64x64 weight, batch 1")
    common.write_json(common.result_name("bench_small", args.threads), rows,
                      {"threads": args.threads, "summary": summary, "overhead": overhead})


def measure(rng, w, weights, kind, batches) -> list:
    r, k = w.shape
    out = []
    for b in batches:
        x = rng.standard_normal((b, k), dtype=np.float32)
        dense = min(common.dense_baselines(w, x).values())
        y = np.empty((b, r), np.float32)
        row = {"kind": kind, "shape": f"{r}x{k}", "batch": b, "dense_us": dense * 1e6}
        for name, t in weights.items():
            secs = common.timeit(lambda: hinm.linear(x, t, out=y))
            row[f"{name}_us"] = secs * 1e6
            row[f"vs_dense_{name}"] = dense / secs
        out.append(row)
    return out


if __name__ == "__main__":
    main()
