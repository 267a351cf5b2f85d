"""One-shot quality on all-MiniLM-L6-v2 (issue table): mean cosine of pruned vs dense sentence
embeddings on held-out standard-library documentation sentences (top-1 nearest-neighbour agreement
in brackets), for magnitude, activation-aware |W|·‖x‖, + least-squares refit of the kept weights
(each layer alone, dense inputs), and the full pipeline (activation-aware + gyro + SparseGPT-style
sequential reconstruction). Prints a table, writes bench/results/quality.json and a PNG.

    python bench/bench_quality.py [--calib 256] [--eval 512] [--quick]"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from hinm._st import calibration_batches, quiet_transformers, st_forward, st_token_mask  # noqa: E402
from hinm.calibration import collect_stats  # noqa: E402
from hinm.quality import doc_sentences, embedding_agreement, encode, load_minilm  # noqa: E402
from hinm.sparsify import select_linears, sparsify_  # noqa: E402

ROWS = [("HiNM v=64, no permutation", "hinm:v64:0.5:2:4", "identity"),
        ("HiNM v=64, gyro", "hinm:v64:0.5:2:4", "gyro"),
        ("unstructured", "unstructured:0.75", "identity"),
        ("(2:4, 50%, for scale)", "2:4", "identity")]
COLS = [("magnitude", "magnitude", False, False), ("activation-aware |W|·‖x‖", "activation", False, False),
        ("+ least-squares refit of kept weights", "activation", "refit", False),
        ("+ SparseGPT + refit, sequential (full)", "activation", "sparsegpt+refit", True)]
EXTRA = [("HiNM v=64 87.5%, gyro", "hinm:v64:0.25:2:4", "gyro"), ("unstructured 87.5%", "unstructured:0.875", "identity")]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calib", type=int, default=256)
    ap.add_argument("--eval", type=int, default=512)
    ap.add_argument("--quick", action="store_true", help="75%% rows only, no sequential column")
    args = ap.parse_args()
    quiet_transformers()
    torch.manual_seed(0)
    dense = load_minilm()
    batches = calibration_batches(dense, doc_sentences(args.calib, "calib"))
    evals = doc_sentences(args.eval, "eval")
    dense_emb = encode(dense, evals)
    stats = collect_stats(dense, select_linears(dense), batches, st_forward, token_mask=st_token_mask)
    cols = COLS[:3] if args.quick else COLS
    rows = ROWS if args.quick else ROWS + EXTRA
    results = []
    for label, config, permute in rows:
        for col, sal, rec, seq in cols:
            if label.startswith(("HiNM v=64 87.5", "unstructured 87.5")) and col in ("magnitude",):
                continue
            t = time.perf_counter()
            model = copy.deepcopy(dense)
            needs = sal != "magnitude" or rec
            sparsify_(model, config, permute=permute, calibration=batches if needs else None, saliency=sal,
                      reconstruct=rec, sequential=seq, compress=False, calibration_forward=st_forward,
                      calibration_token_mask=st_token_mask, calibration_stats=stats, progress=False)
            cos, top1 = embedding_agreement(dense_emb, encode(model, evals))
            results.append(dict(row=label, config=config, permute=permute, column=col, mean_cosine=cos,
                                top1=top1, seconds=time.perf_counter() - t))
            sys.stderr.write(f"{label:28s} {col:40s} {cos:.3f} ({top1:.3f})  {time.perf_counter() - t:.0f} s\n")
    print(f"\nall-MiniLM-L6-v2, {args.calib} calibration / {args.eval} held-out sentences; mean cosine (top-1)\n")
    print("| one shot | " + " | ".join(c[0] for c in cols) + " |")
    print("|---|" + "---|" * len(cols))
    for label, *_ in rows:
        cells = []
        for col, *_ in cols:
            r = next((r for r in results if r["row"] == label and r["column"] == col), None)
            cells.append("–" if r is None else f"{r['mean_cosine']:.2f} ({r['top1']:.2f})")
        print(f"| {label} | " + " | ".join(cells) + " |")
    os.makedirs("bench/results", exist_ok=True)
    with open("bench/results/quality.json", "w") as f:
        json.dump(dict(calib=args.calib, eval=args.eval, results=results), f, indent=1)
    _plot(results)


def _plot(results) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    from hinm._plan import parse_any_config

    fig, ax = plt.subplots(figsize=(7, 4.5))
    series = {}
    for r in results:
        fam = "HiNM gyro" if r["permute"] == "gyro" else ("HiNM" if r["config"].startswith("hinm") else
                                                          "unstructured" if r["config"].startswith("unst") else "2:4")
        series.setdefault(f"{fam}, {r['column']}", []).append((parse_any_config(r["config"]).sparsity, r["mean_cosine"]))
    for name, pts in sorted(series.items()):
        pts.sort()
        ax.plot([100 * p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
    ax.set_xlabel("sparsity (%)")
    ax.set_ylabel("mean cosine to dense")
    ax.legend(fontsize=6)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig("bench/results/quality_vs_sparsity.png", dpi=120)


if __name__ == "__main__":
    main()
