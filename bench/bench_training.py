"""N:M / HiNM training recipes on scikit-learn's bundled digits data (nothing downloaded).

A 64-64-64-10 MLP (small on purpose: wider ones reach dense accuracy at every pattern); the two
hidden Linear layers are sparse, the 10-way head stays dense (as in
SR-STE). Every recipe runs the same number of optimizer steps (Adam, cosine LR, batch 64):
  dense      dense training
  one-shot   dense for half the steps, prune once (mask frozen), fine-tune the other half
  SR-STE     hard mask recomputed every step, λ_W = 2e-4, from step 0
  mask-decay MaskDecay linear, β reaches 0 at 60% of the steps, last 25% hard fine-tune
  struct-decay StructureDecay stepwise (e.g. 7:8→4:8→2:8→1:8), last 25% hard fine-tune
Test accuracy is measured on the finalized (hard-masked) model, mean ± std over seeds.
Needs scikit-learn and matplotlib. Usage: python bench/bench_training.py [--steps 1500] [--seeds 5] [--jobs 2]"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import time

import numpy as np
import torch
from torch import nn

import hinm
import hinm.training as T

PATTERNS = ["2:4", "1:4", "1:8", "hinm:v16:0.5:2:4", "hinm:v16:0.25:2:4"]
RECIPES = ["dense", "one-shot", "SR-STE", "mask-decay", "struct-decay"]
SPARSE_LAYERS = ["0", "2"]
HIDDEN = 64          # HiNM tiles of v=16 rows: 4 tiles per hidden layer


def load_digits(split_seed: int = 0):
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    x, y = sk_digits(return_X_y=True)
    xtr, xte, ytr, yte = train_test_split(x / 16.0, y, test_size=0.2, random_state=split_seed, stratify=y)
    as_t = lambda a, dt: torch.tensor(a, dtype=dt)  # noqa: E731
    return as_t(xtr, torch.float32), as_t(ytr, torch.long), as_t(xte, torch.float32), as_t(yte, torch.long)


def make_model() -> nn.Module:
    return nn.Sequential(nn.Linear(64, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, 10))


def attach(recipe: str, model: nn.Module, pattern: str, steps: int):
    ft = steps // 4
    if recipe == "dense":
        return None
    if recipe == "one-shot":     # mask computed once at the first sparse step, never again
        return T.MaskDecay(model, pattern, schedule="step", dense_steps=steps // 2, mask_every=steps,
                           layers=SPARSE_LAYERS)
    if recipe == "SR-STE":
        return T.SRSTE(model, pattern, lambda_w=2e-4, layers=SPARSE_LAYERS)
    if recipe == "mask-decay":
        return T.MaskDecay(model, pattern, schedule="linear", decay=1.0 / (0.6 * steps), finetune_steps=ft,
                           total_steps=steps, layers=SPARSE_LAYERS)
    if recipe == "struct-decay":
        return T.StructureDecay(model, pattern, total_steps=steps, structure="stepwise", finetune_steps=ft,
                                layers=SPARSE_LAYERS)
    raise ValueError(recipe)


def density_of(model: nn.Module) -> float:
    w = [model[int(i)].weight for i in SPARSE_LAYERS]
    return float(sum((x != 0).sum() for x in w) / sum(x.numel() for x in w))


def run(recipe: str, pattern: str, seed: int, steps: int, data) -> dict:
    xtr, ytr, xte, yte = data
    torch.manual_seed(seed)
    model = make_model()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    rec = attach(recipe, model, pattern, steps)
    gen = torch.Generator().manual_seed(seed)
    order = torch.empty(0, dtype=torch.long)
    for _ in range(steps):
        if len(order) < 64:
            order = torch.cat([order, torch.randperm(len(xtr), generator=gen)])
        idx, order = order[:64], order[64:]
        loss = nn.functional.cross_entropy(model(xtr[idx]), ytr[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if rec is not None:
            rec.step()
    if rec is not None:
        rec.finalize()
    with torch.no_grad():
        acc = float((model(xte).argmax(1) == yte).float().mean())
    return {"acc": acc, "density": density_of(model)}


def table(results: dict, seeds: int) -> str:
    head = f"{'pattern':<20}{'sparsity':>9} | " + " | ".join(f"{r:>14}" for r in RECIPES)
    lines = [head, "-" * len(head)]
    for pattern in PATTERNS:
        cells = []
        for recipe in RECIPES:
            accs = [100 * a for a in results[pattern][recipe]["acc"]]
            cells.append(f"{statistics.mean(accs):6.2f} ± {statistics.stdev(accs) if len(accs) > 1 else 0:4.2f}")
        sp = hinm.parse_config(pattern).sparsity
        lines.append(f"{pattern:<20}{100 * sp:>8.1f}% | " + " | ".join(f"{c:>14}" for c in cells))
    lines.append(f"test accuracy % (mean ± std over {seeds} seeds); dense column: the same dense runs")
    return "\n".join(lines)


def plot(results: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 5))
    width = 0.8 / len(RECIPES)
    xs = np.arange(len(PATTERNS))
    for j, recipe in enumerate(RECIPES):
        means = [100 * np.mean(results[p][recipe]["acc"]) for p in PATTERNS]
        stds = [100 * np.std(results[p][recipe]["acc"], ddof=1) for p in PATTERNS]
        ax.bar(xs + (j - (len(RECIPES) - 1) / 2) * width, means, width, yerr=stds, capsize=2, label=recipe)
    ax.set_xticks(xs, [f"{p}\n({100 * hinm.parse_config(p).sparsity:.1f}% sparse)" for p in PATTERNS], fontsize=8)
    lo = min(100 * min(results[p][r]["acc"]) for p in PATTERNS for r in RECIPES)
    ax.set_ylim(max(0, lo - 3), 100)
    ax.set_ylabel("digits test accuracy (%)")
    ax.set_title(f"N:M / HiNM training recipes, 64-{HIDDEN}-{HIDDEN}-10 MLP on digits, same steps each")
    ax.legend(fontsize=8, ncol=len(RECIPES), loc="upper center", bbox_to_anchor=(0.5, -0.14), frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


_DATA = None


def _init_worker(threads: int) -> None:
    global _DATA
    torch.set_num_threads(threads)
    hinm.set_num_threads(threads)
    _DATA = load_digits()


def _run_job(recipe: str, pattern: str, seed: int, steps: int) -> dict:
    return run(recipe, pattern, seed, steps, _DATA)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="torch/hinm threads per run")
    ap.add_argument("--jobs", type=int, default=2, help="runs in parallel (processes)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    args = ap.parse_args()
    t0 = time.perf_counter()
    jobs = [("dense", PATTERNS[0], s) for s in range(args.seeds)]
    jobs += [(r, p, s) for p in PATTERNS for r in RECIPES[1:] for s in range(args.seeds)]
    with multiprocessing.get_context("fork").Pool(args.jobs, _init_worker, (args.threads,)) as pool:
        done = dict(zip(jobs, pool.starmap(_run_job, [(*j, args.steps) for j in jobs])))
    results: dict = {p: {r: {"acc": [], "density": []} for r in RECIPES} for p in PATTERNS}
    for pattern in PATTERNS:
        for recipe in RECIPES:
            for seed in range(args.seeds):
                r = done[("dense", PATTERNS[0], seed) if recipe == "dense" else (recipe, pattern, seed)]
                results[pattern][recipe]["acc"].append(r["acc"])
                results[pattern][recipe]["density"].append(r["density"])
                if recipe != "dense":
                    want = hinm.parse_config(pattern).density
                    assert abs(r["density"] - want) < 1e-6, (pattern, recipe, r["density"], want)
    print(table(results, args.seeds))
    os.makedirs(args.out, exist_ok=True)
    meta = {"steps": args.steps, "seeds": args.seeds, "threads": args.threads, "jobs": args.jobs, "batch": 64,
            "model": f"MLP 64-{HIDDEN}-{HIDDEN}-10, hidden layers sparse, head dense", "optimizer": "Adam 2e-3 cosine",
            "data": "sklearn digits, 80/20 stratified split (seed 0)", "seconds": time.perf_counter() - t0}
    with open(os.path.join(args.out, "training.json"), "w") as f:
        json.dump({"meta": meta, "results": results}, f, indent=1)
    plot(results, os.path.join(args.out, "training.png"))
    print(f"wrote {args.out}/training.json and training.png ({meta['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
