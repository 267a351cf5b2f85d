"""hinm.sptc_compress / sptc_decompress vs torch's CPU CUTLASS converter
(torch.sparse._semi_structured_conversions), timed in the same run on the same 2:4 matrices.

    python bench/bench_sptc.py [--quick] [--out bench/results]

Prints a table of speedup ratios (torch time / hinm time) and writes JSON under --out."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

SHAPES = [(768, 768), (3072, 768), (4096, 4096)]
DTYPES = ["float16", "bfloat16", "int8", "float32"]


def best_of(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def dense_24(torch, dtype, m, k, seed):
    """A random matrix with exactly 2 of every 4 (1 of 2 for float32) elements kept."""
    g = np.random.default_rng(seed)
    chunk, keep = (2, 1) if dtype == "float32" else (4, 2)
    order = np.argsort(g.random((m, k // chunk, chunk)), axis=-1)
    mask = np.zeros((m, k // chunk, chunk), bool)
    np.put_along_axis(mask, order[..., :keep], True, axis=-1)
    vals = g.integers(1, 100, size=(m, k))
    t = torch.from_numpy(np.where(mask.reshape(m, k), vals, 0).astype(np.float32))
    return t.to(getattr(torch, dtype))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default="bench/results")
    args = ap.parse_args()
    import torch
    from torch.sparse import _semi_structured_conversions as conv

    import hinm

    shapes = SHAPES[:2] if args.quick else SHAPES
    repeats = 2 if args.quick else 3
    rows = []
    print(f"threads: hinm {hinm.get_num_threads()}, torch {torch.get_num_threads()}")
    print(f"{'dtype':9s} {'shape':>11s} {'compress x':>11s} {'decompress x':>13s}   (torch time / hinm time)")
    for dtype in DTYPES:
        for m, k in shapes:
            d = dense_24(torch, dtype, m, k, m + k)
            t_tc = best_of(lambda: conv.sparse_semi_structured_from_dense_cutlass(d), repeats)
            t_hc = best_of(lambda: hinm.sptc_compress(d), repeats)
            vals, meta = hinm.sptc_compress(d)
            t_td = best_of(lambda: conv.sparse_semi_structured_to_dense_cutlass(vals, meta), repeats)
            t_hd = best_of(lambda: hinm.sptc_decompress(vals, meta), repeats)
            rows.append({"dtype": dtype, "m": m, "k": k, "torch_compress_s": t_tc, "hinm_compress_s": t_hc,
                         "torch_decompress_s": t_td, "hinm_decompress_s": t_hd})
            print(f"{dtype:9s} {f'{m}x{k}':>11s} {t_tc / t_hc:11.1f} {t_td / t_hd:13.1f}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_sptc.json").write_text(json.dumps({"torch": torch.__version__, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
