"""One-shot quality on all-MiniLM-L6-v2 (issue table): mean cosine of pruned vs dense sentence
embeddings on held-out standard-library documentation sentences (top-1 nearest-neighbour agreement
in brackets), for magnitude, activation-aware |W|·‖x‖, + least-squares refit of the kept weights
(each layer alone, dense inputs), and the full pipeline (activation-aware saliency + SparseGPT-style
sequential reconstruction; + gyro for HiNM) — the same full pipeline for unstructured, so the
comparison is like for like — at 50% (2:4), 75% and 87.5%. Then distillation recovery of the full
HiNM 75% gyro model (masks fixed, ends compressed). Prints a table, writes
bench/results/quality.json and bench/results/quality_vs_sparsity.png (one panel per method; --name).

    python bench/bench_quality.py [--calib 256] [--eval 384] [--distill-cpu-seconds 1000] [--only ROWS] [--cols 2,3] [--quick]"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time

import hinm  # noqa: E402,F401  (before torch: hinm sets OpenMP's idle spin, see hinm/__init__.py)
import torch  # noqa: E402

from hinm._st import calibration_batches, quiet_transformers, st_forward, st_token_mask  # noqa: E402
from hinm.calibration import collect_stats  # noqa: E402
from hinm.distillation import DistillConfig, distill  # noqa: E402
from hinm.quality import doc_sentences, embedding_agreement, encode, load_minilm  # noqa: E402
from hinm.sparsify import select_linears, sparsify_  # noqa: E402

HINM75, HINM875 = "hinm:v64:0.5:2:4", "hinm:v64:0.25:2:4"
# (row label, config, permute, family for the plot)
ROWS = [("HiNM v=64 75%, no permutation", HINM75, "identity", "HiNM, no permutation"),
        ("HiNM v=64 75%, gyro", HINM75, "gyro", "HiNM (2:4 at 50%), gyro"),
        ("unstructured 75%", "unstructured:0.75", "identity", "unstructured"),
        ("2:4 (50%)", "2:4", "identity", "HiNM (2:4 at 50%), gyro"),
        ("HiNM v=64 87.5%, gyro", HINM875, "gyro", "HiNM (2:4 at 50%), gyro"),
        ("unstructured 87.5%", "unstructured:0.875", "identity", "unstructured")]
# (column label, saliency, reconstruct, sequential)
COLS = [("magnitude", "magnitude", False, False), ("activation-aware |W|·‖x‖", "activation", False, False),
        ("+ least-squares refit (dense inputs)", "activation", "refit", False),
        ("+ SparseGPT + refit, sequential (full)", "activation", "sparsegpt+refit", True)]
DISTILL_ROW = "HiNM v=64 75%, gyro"


def _sparsity(config: str) -> float:
    from hinm._plan import parse_any_config

    return float(parse_any_config(config).sparsity)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calib", type=int, default=256)
    ap.add_argument("--eval", type=int, default=384)
    ap.add_argument("--distill-cpu-seconds", type=float, default=1000.0,
                    help="distillation budget in process CPU seconds (1000: ~9.5 min wall on 2 idle cores, "
                         "whose training loop keeps ~1.8 busy); 0: none")
    ap.add_argument("--distill-lr", type=float, default=1e-4)
    ap.add_argument("--quick", action="store_true", help="75%% rows only, no sequential column, no distillation")
    ap.add_argument("--only", default=None, help="'|'-separated prefixes of the row labels to run")
    ap.add_argument("--name", default="quality", help="result files bench/results/NAME.json and NAME_vs_sparsity.png")
    ap.add_argument("--cols", default=None, help="comma-separated column numbers to run (0-3)")
    args = ap.parse_args()
    quiet_transformers()
    torch.manual_seed(0)
    dense = load_minilm()
    batches = calibration_batches(dense, doc_sentences(args.calib, "calib"))
    evals = doc_sentences(args.eval, "eval")
    dense_emb = encode(dense, evals)
    stats = collect_stats(dense, select_linears(dense), batches, st_forward, token_mask=st_token_mask)
    cols = COLS[:3] if args.quick else COLS
    if args.cols:
        cols = [COLS[int(i)] for i in args.cols.split(",")]
    rows = [r for r in ROWS if not args.quick or "75%" in r[0]]
    if args.only:
        rows = [r for r in rows if r[0].startswith(tuple(args.only.split("|")))]
    results, keep = [], None
    for label, config, permute, family in rows:
        for col, sal, rec, seq in cols:
            if "87.5" in label and sal == "magnitude":
                continue
            t = time.perf_counter()
            model = copy.deepcopy(dense)
            needs = sal != "magnitude" or rec
            compress = label == DISTILL_ROW and seq  # the model distillation starts from, stored compressed
            sparsify_(model, config, permute=permute, calibration=batches if needs else None, saliency=sal,
                      reconstruct=rec, sequential=seq, compress=compress, calibration_forward=st_forward,
                      calibration_token_mask=st_token_mask, calibration_stats=stats, progress=False)
            cos, top1 = embedding_agreement(dense_emb, encode(model, evals))
            results.append(dict(row=label, config=config, sparsity=_sparsity(config), permute=permute, family=family,
                                column=col, mean_cosine=cos, top1=top1, seconds=time.perf_counter() - t))
            sys.stderr.write(f"{label:30s} {col:40s} {cos:.3f} ({top1:.3f})  {time.perf_counter() - t:.0f} s\n")
            if compress:
                keep = model
    if keep is not None and args.distill_cpu_seconds > 0 and not args.quick:
        results.append(_distill_row(dense, keep, evals, dense_emb, args))
    _print_table(results, rows, cols, args)
    os.makedirs("bench/results", exist_ok=True)
    with open(f"bench/results/{args.name}.json", "w") as f:
        json.dump(dict(calib=args.calib, eval=args.eval, torch_threads=torch.get_num_threads(), results=results),
                  f, indent=1)
    _plot(results, cols, f"bench/results/{args.name}_vs_sparsity.png")


def _distill_row(dense, student, evals, dense_emb, args) -> dict:
    """Distil on every calibration-split sentence (disjoint from the evaluation split)."""
    from hinm.nn import HiNMLinear
    from hinm.quality import _split_sentences

    pool = list(_split_sentences(0)[0])
    dbatches = calibration_batches(dense, pool, batch_size=32)
    t, c = time.perf_counter(), time.process_time()
    rep = distill(student, dense, dbatches, DistillConfig(seconds=None, cpu_seconds=args.distill_cpu_seconds, lr=args.distill_lr),
                  forward=st_forward, progress=False)
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    compressed = sum(isinstance(m, HiNMLinear) for m in student.modules())
    cos, top1 = embedding_agreement(dense_emb, encode(student, evals))
    sys.stderr.write(f"{DISTILL_ROW} + distillation: {cos:.3f} ({top1:.3f}), {rep.steps} steps, {wall:.0f} s wall, "
                     f"{cpu:.0f} s CPU, loss {rep.loss_start:.4f} -> {rep.loss_end:.4f}, {compressed} HiNMLinear\n")
    return dict(row=DISTILL_ROW, config=HINM75, sparsity=0.75, permute="gyro", family="HiNM (2:4 at 50%), gyro",
                column="+ distillation", mean_cosine=cos, top1=top1, seconds=wall, cpu_seconds=cpu, steps=rep.steps,
                distill_sentences=len(pool), loss_start=rep.loss_start, loss_end=rep.loss_end,
                hinm_linear_modules=compressed)


def _print_table(results, rows, cols, args) -> None:
    print(f"\nall-MiniLM-L6-v2, {args.calib} calibration / {args.eval} held-out sentences, "
          f"{torch.get_num_threads()} threads; mean cosine (top-1)\n")
    names = [c[0] for c in cols] + (["+ distillation"] if any(r["column"] == "+ distillation" for r in results) else [])
    print("| one shot | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for label, *_ in rows:
        cells = []
        for col in names:
            r = next((r for r in results if r["row"] == label and r["column"] == col), None)
            cells.append("–" if r is None else f"{r['mean_cosine']:.2f} ({r['top1']:.2f})")
        print(f"| {label} | " + " | ".join(cells) + " |")
    print("\nseconds per run: " + ", ".join(f"{r['row']} / {r['column']}: {r['seconds']:.0f}" for r in results))


def _plot(results, cols, path: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    panels = [c[0] for c in cols] + (["+ distillation"] if any(r["column"] == "+ distillation" for r in results) else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 4), sharey=True, squeeze=False)
    for ax, col in zip(axes[0], panels):
        series = {}
        for r in results:
            if r["column"] == col:
                series.setdefault(r["family"], []).append((r["sparsity"], r["mean_cosine"]))
        for name, pts in sorted(series.items()):
            pts.sort()
            ax.plot([100 * p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
        ax.set_title(col, fontsize=9)
        ax.set_xlabel("sparsity (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("mean cosine to dense embeddings")
    fig.suptitle("all-MiniLM-L6-v2: quality vs sparsity per method (held-out text)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
