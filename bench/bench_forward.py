"""Whole-model forward on CPU: all-MiniLM-L6-v2 dense vs every nn.Linear as HiNMLinear at 75% and
87.5% (v=64, 2:4), for batches of 1, 8 and 32 sentences. All models are timed in the same run,
interleaved, on the same threads for torch and hinm (best of --repeats, wall and process CPU time);
the tokenised batch is fed to the model, so tokenisation is not timed.

Speed does not depend on which weights are kept, only on the structure: layers are pruned by
magnitude with a *random* permutation (a non-trivial row_perm and per-tile column orders, like gyro's,
in a second instead of minutes); --permute identity measures the unpermuted layout. By default
sparsify_ folds each MLP's row permutation into the next layer (bit-identical); --no-fold keeps it,
--compare-fold adds HiNM 75% without the fold to the same run.

    python bench/bench_forward.py [--threads 2] [--batches 1 8 32] [--repeats 7] [--permute random]
                                  [--no-fold | --compare-fold] [--compare-prepack]

--compare-prepack adds both HiNM models with every layer's weight prepacked (a second copy in the
kernels' packed layout, hinm.nn.prepack_)."""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import THREADS, print_table, result_name, write_json  # noqa: E402  (pins BLAS threads first)

import hinm  # noqa: E402,F401  (before torch: hinm sets OpenMP's idle spin, see hinm/__init__.py)
import torch  # noqa: E402

from hinm._st import quiet_transformers, st_forward  # noqa: E402
from hinm._timing import matched_threads, time_forwards  # noqa: E402
from hinm.quality import doc_sentences, load_minilm  # noqa: E402
from hinm.sparsify import sparsify_  # noqa: E402

CONFIGS = {"hinm75": "hinm:v64:0.5:2:4", "hinm875": "hinm:v64:0.25:2:4"}


def build_models(configs: dict, permute: str, fold: bool) -> dict:
    quiet_transformers()
    dense = load_minilm()
    dense.eval()
    models = {"dense": dense}
    for key, config in configs.items():
        nofold = key.endswith("_nofold")
        model = copy.deepcopy(dense)
        sparsify_(model, config, permute=permute, progress=False, fold_permutations=fold and not nofold)
        if key.endswith("_packed"):
            hinm.nn.prepack_(model)
        models[key] = model
    return models


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=THREADS)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--permute", default="random", choices=["random", "identity"])
    ap.add_argument("--no-fold", action="store_true", help="keep the MLP row permutations in the store")
    ap.add_argument("--compare-fold", action="store_true", help="also time HiNM 75%% without the fold")
    ap.add_argument("--compare-prepack", action="store_true",
                    help="also time HiNM 75%% and 87.5%% with their weights prepacked (hinm.nn.prepack_)")
    ap.add_argument("--cpu-time", action="store_true", help="(accepted for symmetry: CPU time is always reported)")
    args = ap.parse_args()
    threads = matched_threads(args.threads)
    configs = dict(CONFIGS, **({"hinm75_nofold": CONFIGS["hinm75"]} if args.compare_fold else {}))
    if args.compare_prepack:
        configs.update({f"{key}_packed": config for key, config in CONFIGS.items()})
    models = build_models(configs, args.permute, not args.no_fold)
    dense = models["dense"]
    tokenize = getattr(dense, "preprocess", None) or dense.tokenize
    sentences = doc_sentences(max(args.batches), "eval")
    rows = []
    for batch in args.batches:
        features = dict(tokenize(sentences[:batch]))
        t = time_forwards(models, lambda m: st_forward(m, features), args.repeats, threads)
        mask = features["attention_mask"]
        row = dict(batch=batch, tokens=int(mask.numel()), real_tokens=int(mask.sum()),
                   dense_ms=round(1e3 * t["dense"].wall_min, 2), dense_cpu_ms=round(1e3 * t["dense"].cpu_min, 2))
        for key in configs:
            row[f"{key}_ms"] = round(1e3 * t[key].wall_min, 2)
            row[f"{key}_x"] = round(t["dense"].wall_min / t[key].wall_min, 3)
            row[f"{key}_median_x"] = round(t["dense"].wall_median / t[key].wall_median, 3)
            row[f"{key}_cpu_x"] = round(t["dense"].cpu_min / t[key].cpu_min, 3)
        rows.append(row)
    cols = ["batch", "tokens", "dense_ms"] + [f"{k}_{s}" for k in configs for s in ("ms", "x", "cpu_x")]
    print_table(rows, cols, f"MiniLM forward, {threads} threads (torch and hinm), permute={args.permute}, "
                            f"fold={not args.no_fold}: speedup x = dense / HiNM, best of {args.repeats} (wall); "
                            "cpu_x from process CPU time")
    name = result_name("forward", threads) + ("" if args.permute == "random" else f"_{args.permute}") + \
        ("_nofold" if args.no_fold else "") + ("_cmpfold" if args.compare_fold else "") + \
        ("_cmppack" if args.compare_prepack else "")
    write_json(name, rows, {"permute": args.permute, "fold": not args.no_fold, "repeats": args.repeats,
                            "configs": configs})


if __name__ == "__main__":
    main()
