"""Plain N:M (2:4 by default) CPU GEMM vs dense: y = x Wᵀ on BERT-base shapes.

Prints, per shape and batch, the times of torch.matmul (F.linear), numpy.matmul and hinm.linear
with float32 and float16 values, and with float32 values prepacked (hinm.prepack: a second copy of
the weight in the batch-1..12 kernels' layout), and the speedup of hinm over the faster dense
baseline (same thread count everywhere). All five are timed in interleaved rounds: the speedup is
the median over rounds of (faster dense in that round) / (hinm in that round), so a drift of the
machine's speed between seconds does not land on one candidate; times are medians over rounds.
Writes bench/results/bench_nm_t<threads>[_cpu].json (with every round's times).

    python bench/bench_nm.py [--quick] [--threads 2] [--pattern 2:4] [--rounds 9] [--cpu-time]
"""

from __future__ import annotations

import argparse
import statistics

import common  # (pins BLAS threads before numpy is imported)

common.libgomp_default_spin()  # torch's dense baseline at its best (before hinm sets a short spin)

import numpy as np  # noqa: E402

import hinm  # noqa: E402

SHAPES = [(768, 768), (3072, 768), (768, 3072), (4096, 4096)]  # (out, in) = W's [R, K]
BATCHES = [1, 16, 128, 512]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="two shapes, batches 1 and 128")
    ap.add_argument("--threads", type=int, default=common.THREADS)
    ap.add_argument("--cpu-time", action="store_true", help="time with the CPU clock (use with --threads 1)")
    ap.add_argument("--pattern", default="2:4")
    ap.add_argument("--batches", type=int, nargs="*")
    ap.add_argument("--rounds", type=int, default=9, help="interleaved timing rounds per cell")
    args = ap.parse_args()
    common.setup_threads(args.threads)
    n, m = (int(s) for s in args.pattern.split(":"))
    shapes = SHAPES[:2] if args.quick else SHAPES
    batches = common.batches(args.batches, [1, 128] if args.quick else BATCHES)
    rng = np.random.default_rng(0)
    rows = []
    for r, k in shapes:
        w = rng.standard_normal((r, k), dtype=np.float32)
        t32 = hinm.compress_nm(w, n, m)
        t16 = hinm.compress_nm(w.astype(np.float16), n, m)
        packed = hinm.prepack(t32)
        for b in batches:
            x = rng.standard_normal((b, k), dtype=np.float32)
            y = np.empty((b, r), np.float32)
            fns = common.dense_candidates(w, x)
            dense = list(fns)
            fns.update(hinm_f32=lambda: hinm.linear(x, t32, out=y), hinm_f16=lambda: hinm.linear(x, t16, out=y),
                       hinm_packed=lambda: hinm.linear(x, packed, out=y))
            samples = common.timeit_rounds(fns, rounds=args.rounds)
            row = {"shape": f"{r}x{k}", "batch": b, "rounds_us": {cand: [t * 1e6 for t in ts] for cand, ts in samples.items()}}
            row.update({f"{name}_us": statistics.median(t) * 1e6 for name, t in samples.items()})
            row.update({f"speedup_{name.removeprefix('hinm_')}": common.round_ratio(samples, dense, name)
                        for name in ("hinm_f32", "hinm_f16", "hinm_packed")})
            rows.append(row)
            print(f"  {r}x{k} batch {b} done", flush=True)
    common.print_table(rows, ["shape", "batch", "torch_us", "numpy_us", "hinm_f32_us", "hinm_f16_us", "hinm_packed_us",
                              "speedup_f32", "speedup_f16", "speedup_packed"],
                       title=f"hinm.linear {n}:{m} vs best dense (speedup = best dense / hinm), {args.threads} threads")
    common.write_json(common.result_name("bench_nm", args.threads), rows, {"pattern": f"{n}:{m}", "threads": args.threads})


if __name__ == "__main__":
    main()
