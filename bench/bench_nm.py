"""Plain N:M (2:4 by default) CPU GEMM vs dense: y = x Wᵀ on BERT-base shapes.

Prints, per shape and batch, the times of torch.matmul (F.linear), numpy.matmul and hinm.linear
with float32 and float16 values, and with float32 values prepacked (hinm.prepack: a second copy of
the weight in the batch-1..12 kernels' layout), and the speedup of hinm over the faster dense
baseline measured in the same run (same thread count everywhere). Writes bench/results/bench_nm_t<threads>[_cpu].json.

    python bench/bench_nm.py [--quick] [--threads 2] [--pattern 2:4] [--cpu-time]
"""

from __future__ import annotations

import argparse

import common  # noqa: F401  (pins BLAS threads before numpy is imported)
import numpy as np

import hinm

SHAPES = [(768, 768), (3072, 768), (768, 3072), (4096, 4096)]  # (out, in) = W's [R, K]
BATCHES = [1, 16, 128, 512]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="two shapes, batches 1 and 128")
    ap.add_argument("--threads", type=int, default=common.THREADS)
    ap.add_argument("--cpu-time", action="store_true", help="time with the CPU clock (use with --threads 1)")
    ap.add_argument("--pattern", default="2:4")
    ap.add_argument("--batches", type=int, nargs="*")
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
            dense = common.dense_baselines(w, x)
            best = min(dense.values())
            y = np.empty((b, r), np.float32)
            t_f32 = common.timeit(lambda: hinm.linear(x, t32, out=y))
            t_f16 = common.timeit(lambda: hinm.linear(x, t16, out=y))
            t_pk = common.timeit(lambda: hinm.linear(x, packed, out=y))
            rows.append({"shape": f"{r}x{k}", "batch": b, "torch_us": dense.get("torch", float("nan")) * 1e6,
                         "numpy_us": dense["numpy"] * 1e6, "hinm_f32_us": t_f32 * 1e6, "hinm_f16_us": t_f16 * 1e6,
                         "hinm_packed_us": t_pk * 1e6, "speedup_f32": best / t_f32, "speedup_f16": best / t_f16,
                         "speedup_packed": best / t_pk})
            print(f"  {r}x{k} batch {b} done", flush=True)
    common.print_table(rows, ["shape", "batch", "torch_us", "numpy_us", "hinm_f32_us", "hinm_f16_us", "hinm_packed_us",
                              "speedup_f32", "speedup_f16", "speedup_packed"],
                       title=f"hinm.linear {n}:{m} vs best dense (speedup = best dense / hinm), {args.threads} threads")
    common.write_json(common.result_name("bench_nm", args.threads), rows, {"pattern": f"{n}:{m}", "threads": args.threads})


if __name__ == "__main__":
    main()
