"""HiNM CPU GEMM vs dense and scipy CSR: y = x Wᵀ with float32 values, 75% and 87.5% sparsity
(2:4 inside tiles of v rows that keep 50% / 25% of the input columns), v in {32, 64, 128}, under a
random row permutation and per-tile column orders (what a permutation search leaves).

Speedup = baseline time / hinm time, every baseline timed in the same run on the same threads:
"dense" is the faster of torch.matmul (F.linear) and numpy.matmul; "csr" is scipy.sparse CSR with
the same nonzeros. "packed" times the same weight after hinm.prepack (a second copy in the
layout of the batch-1..12 kernels, which the float32 2:4 kernels of larger batches read too).
For each shape and batch, dense and every hinm weight (plain and packed) are timed in interleaved
rounds (common.timeit_rounds): the ratio to dense is the median over rounds of the per-round
ratio, so a drift of the VM's speed between seconds does not land on one cell (timed one after
the other, single cells came out 1.6x apart from an interleaved A/B). CSR, 1.3-17x slower, is
timed once per weight. Writes bench/results/bench_hinm_t<threads>[_cpu].json and a
speedup-vs-batch plot next to it (.png, when matplotlib is installed).

    python bench/bench_hinm.py [--quick] [--threads 2] [--cpu-time] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics

import common

common.libgomp_default_spin()  # torch's dense baseline at its best (before hinm sets a short spin)

import numpy as np  # noqa: E402

import hinm  # noqa: E402

SHAPES = [(384, 384), (1536, 384), (384, 1536), (768, 3072), (3072, 768), (4096, 4096), (11008, 4096)]
BATCHES = [1, 8, 32, 128, 512]
VS = [32, 64, 128]
SPARSITIES = {"75%": 0.5, "87.5%": 0.25}  # vec_density with 2:4


def random_hinm(rng, r, k, v, vec_density, n=2, m=4):
    """hinm.compress of a random weight (|w| saliency) under a random row permutation and column
    orders, as a searched permutation has them (the kernels then gather and store through them),
    plus its scipy CSR equivalent (same nonzeros)."""
    import scipy.sparse as sp

    w, cfg = rng.standard_normal((r, k), dtype=np.float32), hinm.HiNMConfig(v, vec_density, n, m)
    perm = hinm.search_permutation(w, cfg, method="random", seed=int(rng.integers(2**31)))
    t = hinm.compress(w, cfg, perm=perm)
    csr = sp.csr_matrix(np.asarray(t.to_dense()))
    csr.sort_indices()
    return t, csr


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="three shapes, v=64, batches 1, 32, 128")
    ap.add_argument("--threads", type=int, default=common.THREADS)
    ap.add_argument("--cpu-time", action="store_true", help="time with the CPU clock (use with --threads 1)")
    ap.add_argument("--batches", type=int, nargs="*")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds per shape and batch")
    args = ap.parse_args()
    common.setup_threads(args.threads)
    shapes = [SHAPES[0], SHAPES[4], SHAPES[5]] if args.quick else SHAPES
    batches = common.batches(args.batches, [1, 32, 128] if args.quick else BATCHES)
    vs = [64] if args.quick else VS
    rng = np.random.default_rng(0)
    rows = []
    for r, k in shapes:
        w_dense = rng.standard_normal((r, k), dtype=np.float32)
        weights = {(s, v): random_hinm(rng, r, k, v, d) for s, d in SPARSITIES.items() for v in vs}
        packed = {key: hinm.prepack(w) for key, (w, _) in weights.items()}
        for b in batches:
            x = rng.standard_normal((b, k), dtype=np.float32)
            xt = np.ascontiguousarray(x.T)
            y = np.empty((b, r), np.float32)
            fns = common.dense_candidates(w_dense, x)
            dense_names = list(fns)
            for (s, v), (w, _) in weights.items():
                fns[f"hinm {s} {v}"] = lambda w=w: hinm.linear(x, w, out=y)
                fns[f"packed {s} {v}"] = lambda pk=packed[(s, v)]: hinm.linear(x, pk, out=y)
            samples = common.timeit_rounds(fns, rounds=args.rounds)
            dense = min(statistics.median(samples[name]) for name in dense_names)
            for (s, v), (w, csr) in weights.items():
                t_hinm = statistics.median(samples[f"hinm {s} {v}"])
                t_pk = statistics.median(samples[f"packed {s} {v}"])
                t_csr = common.timeit(lambda: csr @ xt)
                rows.append({"shape": f"{r}x{k}", "sparsity": s, "v": v, "batch": b, "dense_us": dense * 1e6,
                             "csr_us": t_csr * 1e6, "hinm_us": t_hinm * 1e6, "packed_us": t_pk * 1e6,
                             "vs_dense": common.round_ratio(samples, dense_names, f"hinm {s} {v}"),
                             "packed_vs_dense": common.round_ratio(samples, dense_names, f"packed {s} {v}"),
                             "vs_csr": t_csr / t_hinm})
            print(f"  {r}x{k} batch {b} done", flush=True)
    common.print_table(rows, ["shape", "sparsity", "v", "batch", "dense_us", "csr_us", "hinm_us", "packed_us", "vs_dense",
                              "packed_vs_dense", "vs_csr"],
                       title=f"hinm.linear HiNM float32 vs best dense and scipy CSR ({args.threads} threads)")
    summary = []
    for s in SPARSITIES:
        for b in batches:
            sel = [row for row in rows if row["sparsity"] == s and row["batch"] == b]
            ratio = [row["vs_dense"] for row in sel]
            summary.append({"sparsity": s, "batch": b, "min_vs_dense": min(ratio), "median_vs_dense": float(np.median(ratio)),
                            "geomean_vs_dense": float(np.exp(np.mean(np.log(ratio)))),
                            "geomean_packed": float(np.exp(np.mean(np.log([row["packed_vs_dense"] for row in sel])))),
                            "min_vs_csr": min(row["vs_csr"] for row in sel)})
    common.print_table(summary, ["sparsity", "batch", "min_vs_dense", "median_vs_dense", "geomean_vs_dense",
                                 "geomean_packed", "min_vs_csr"], title="summary over shapes and v")
    common.write_json(common.result_name("bench_hinm", args.threads), rows, {"threads": args.threads, "summary": summary})
    series = {}
    for s in SPARSITIES:
        for r, k in shapes:
            v = 64 if 64 in vs else vs[0]
            pts = [(row["batch"], row["vs_dense"]) for row in rows
                   if row["sparsity"] == s and row["shape"] == f"{r}x{k}" and row["v"] == v]
            series[f"{s} {r}x{k} v={v}"] = pts
    common.plot_lines(common.RESULTS_DIR / (common.result_name("bench_hinm", args.threads) + ".png"), series, "batch", "speedup vs best dense",
                      f"HiNM float32, {args.threads} threads")


if __name__ == "__main__":
    main()
