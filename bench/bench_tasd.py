"""TASD and TASDER on all-MiniLM-L6-v2 (offline; pip install 'hinm[demo]').

1. Per-layer weight error ‖W − Ŵ‖/‖W‖ of TASD series vs the number of terms and the density,
   against one N:M term (the engine-native ones, and the single N:M of equal density that such
   engines lack) and against unstructured magnitude pruning at equal density.
2. TASDER plans at targets 0.99 and 0.98 (quality = mean cosine of sentence embeddings to the dense
   model's, searched on calibration sentences at target + margin) against the best uniform config
   (one entry of the same menu on every layer, weights or activations) meeting the same target on
   the held-out sentences: an oracle baseline, chosen on the held-out data TASDER never sees.

Prints tables, writes bench/results/bench_tasd.json and bench/results/bench_tasd.png.
Usage: python bench/bench_tasd.py [--calib 24] [--eval 256] [--margin 0.007] [--targets 0.99 0.98]"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time

import numpy as np
import torch

import hinm
from hinm.tasder import DEFAULT_MENU, KINDS
from hinm.quality import doc_sentences, embedding_agreement, encode, load_minilm

NATIVE = ["1:4", "2:4", "2:8", "4:8"]                     # what a {M=4, M=8} engine runs in one pass
CHAINS = [["2:4", "1:8", "1:16"], ["1:4", "1:8", "1:16"], ["4:8", "1:16", "1:16"]]  # series grown term by term
EXTRA_SERIES = ["2:4+2:8", "2:8+1:16", "4:8+1:16"]
TASDER_MENU = DEFAULT_MENU  # the uniform baselines use the very same entries


def equal_density_single(density: float, m: int = 16) -> str:
    return f"{int(round(density * m))}:{m}"


def unstructured_error(w: np.ndarray, density: float) -> float:
    a = np.abs(w).ravel()
    keep = int(round(density * a.size))
    dropped = np.sort(a)[: a.size - keep]
    return float(np.sqrt(np.sum(dropped.astype(np.float64) ** 2)) / np.linalg.norm(w.astype(np.float64)))


def layer_errors(model) -> dict:
    layers = {n: m.weight.detach().float().contiguous() for n, m in model.named_modules()
              if isinstance(m, torch.nn.Linear) and ".encoder." in f".{n}"}
    series = sorted({"+".join(c[:i]) for c in CHAINS for i in range(1, len(c) + 1)} | set(NATIVE) | set(EXTRA_SERIES),
                    key=lambda s: (hinm.series_density(s), s))
    rows = []
    for s in series:
        d = hinm.series_density(s)
        single = equal_density_single(d)
        tasd_e = [hinm.tasd(w, s).error(w) for w in layers.values()]
        single_e = [hinm.tasd(w, single).error(w) for w in layers.values()]
        unstr_e = [unstructured_error(w.numpy(), d) for w in layers.values()]
        rows.append({"series": s, "terms": s.count("+") + 1, "density": d, "tasd": float(np.mean(tasd_e)),
                     "tasd_max": float(np.max(tasd_e)), "single_equal_density": single,
                     "single": float(np.mean(single_e)), "unstructured": float(np.mean(unstr_e))})
    return {"layers": len(layers), "rows": rows}


def print_errors(res: dict) -> None:
    print(f"\nPer-layer weight error ‖W−Ŵ‖/‖W‖, mean over {res['layers']} MiniLM encoder layers")
    print(f"{'series':>16} {'terms':>5} {'density':>7} {'TASD':>7} {'1 term same density':>22} {'unstructured':>12}")
    for r in res["rows"]:
        print(f"{r['series']:>16} {r['terms']:>5} {r['density']:>7.4f} {r['tasd']:>7.4f} "
              f"{r['single_equal_density'] + ' ' + format(r['single'], '.4f'):>22} {r['unstructured']:>12.4f}")


class Judge:
    """Embedding agreement with the dense model on fixed calibration and held-out sentences."""

    def __init__(self, model, n_calib: int, n_eval: int) -> None:
        self.calib, self.eval = doc_sentences(n_calib, "calib"), doc_sentences(n_eval, "eval")
        self.dense_calib, self.dense_eval = encode(model, self.calib), encode(model, self.eval)

    def calib_quality(self, model) -> float:
        return embedding_agreement(self.dense_calib, encode(model, self.calib))[0]

    def held_out(self, model) -> tuple:
        return embedding_agreement(self.dense_eval, encode(model, self.eval))


def encoder_layer(name: str) -> bool:
    return ".encoder." in f".{name}"


def evaluate_plan(model, plan, judge) -> tuple:
    undo = plan.simulate(model)
    try:
        return judge.held_out(model)
    finally:
        undo()


class Clock:
    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def read(self) -> dict:
        return {"wall_s": time.perf_counter() - self.wall, "cpu_s": time.process_time() - self.cpu}


def uniform_baselines(model, judge, search, targets, screen: float) -> tuple:
    """Every uniform menu entry's calibration quality; held-out quality, most MACs saved first, for
    those within `screen` of the lowest target on calibration, until one meets the highest target
    (no later entry can be the best uniform for any target)."""
    clock = Clock()
    out, plans = [], []
    for kind, series, assign in search.uniform_candidates():
        plans.append(hinm.TASDERPlan(assign))
        out.append({"kind": kind, "series": series, "mac_reduction": plans[-1].mac_reduction,
                    "calib_cos": search.uniform_quality(kind, series), "eval_cos": None, "eval_top1": None})
    for b, plan in zip(out, plans):
        if b["calib_cos"] < min(targets) - screen:
            continue
        b["eval_cos"], b["eval_top1"] = evaluate_plan(model, plan, judge)
        if b["eval_cos"] >= max(targets):
            break
    return out, clock.read()


def best_uniform(baselines, target):
    ok = [b for b in baselines if b["eval_cos"] is not None and b["eval_cos"] >= target]
    return max(ok, key=lambda b: b["mac_reduction"]) if ok else None


def print_layers(plan) -> None:
    print(f"  {'layer':>44} {'kind':>10} {'series':>10} {'density':>7}")
    for r in plan.describe():
        print(f"  {r['layer']:>44} {r['kind']:>10} {r['series'] or '-':>10} {r['density']:>7.4f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calib", type=int, default=24, help="calibration sentences (search)")
    ap.add_argument("--eval", type=int, default=256, help="held-out sentences (verification)")
    ap.add_argument("--margin", type=float, default=0.007,
                    help="search at target + margin: held-out cosine ran 0.004-0.005 below calibration")
    ap.add_argument("--screen", type=float, default=0.01,
                    help="uniform entries below (lowest target - screen) on calibration skip the held-out check")
    ap.add_argument("--targets", type=float, nargs="+", default=[0.99, 0.98])
    ap.add_argument("--max-refine", type=int, default=24, help="TASDER: most evaluations refining each start")
    ap.add_argument("--no-errors", action="store_true", help="skip the per-layer error table")
    ap.add_argument("--name", default="bench_tasd", help="base name of the JSON/PNG files")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.manual_seed(0)
    model = load_minilm()

    t0 = time.time()
    errors = {"layers": 0, "rows": []} if args.no_errors else layer_errors(model)
    if errors["rows"]:
        print_errors(errors)

    judge = Judge(model, args.calib, args.eval)
    calibration = lambda m: encode(m, judge.calib)  # noqa: E731
    clock = Clock()
    search = hinm.TASDERSearch(model, calibration, judge.calib_quality, menu=TASDER_MENU, layers=encoder_layer,
                               max_refine=args.max_refine)
    setup = clock.read()
    baselines, uniform_time = uniform_baselines(model, judge, search, args.targets, args.screen)
    print(f"\nUniform configs (every encoder nn.Linear; {uniform_time['wall_s']:.0f} s wall), calibration and held-out")
    print(f"{'kind':>10} {'series':>10} {'MAC cut':>8} {'calib cos':>9} {'eval cos':>9} {'top-1':>6}")
    for b in baselines:
        ev = "-" if b["eval_cos"] is None else f"{b['eval_cos']:.5f}"
        t1 = "-" if b["eval_top1"] is None else f"{b['eval_top1']:.3f}"
        print(f"{b['kind']:>10} {b['series']:>10} {b['mac_reduction']:>8.4f} {b['calib_cos']:>9.5f} {ev:>9} {t1:>6}")

    plans, previous = [], None
    for target in sorted(args.targets, reverse=True):  # a looser target also starts from the last plan
        clock = Clock()
        search_target = min(1.0, target + args.margin)
        plan = search.search(search_target, start=previous)
        took = clock.read()
        previous = plan
        cos, top1 = evaluate_plan(model, plan, judge)
        best = best_uniform(baselines, target)
        kinds = {k: sum(1 for lp in plan.layers.values() if lp.kind == k) for k in KINDS}
        plans.append({"target": target, "search_target": search_target, "mac_reduction": plan.mac_reduction,
                      "calib_cos": plan.quality, "eval_cos": cos, "eval_top1": top1, "meets_target": cos >= target,
                      "layer_kinds": kinds, "evaluations": len(plan.history), **took,
                      "calib_uniform": plan.uniform, "best_uniform": best,
                      "beats_uniform": best is None or plan.mac_reduction > best["mac_reduction"],
                      "plan": json.loads(plan.to_json())})
        print(f"\nTASDER plan, target {target} (searched at {search_target:.3f}): MAC cut {plan.mac_reduction:.4f}, "
              f"calib cos {plan.quality:.5f}, held-out cos {cos:.5f}")
        print_layers(plan)
        log_partial(args.out, args.name, plans)

    print("\nTASDER vs the best uniform config meeting the target on held-out sentences (oracle)")
    print(f"{'target':>6} {'TASDER cut':>10} {'eval cos':>9} {'top-1':>6} {'meets':>5} {'best uniform':>16} "
          f"{'its cut':>8} {'its cos':>8} {'ratio':>6} {'W/A/dense':>10} {'evals':>5} {'wall s':>7} {'cpu s':>7}")
    for p in plans:
        b = p["best_uniform"]
        name = f"{b['kind'][0].upper()} {b['series']}" if b else "none"
        bcut = b["mac_reduction"] if b else 0.0
        bcos = f"{b['eval_cos']:.5f}" if b else "-"
        ratio = p["mac_reduction"] / bcut if bcut else float("inf")
        k = p["layer_kinds"]
        print(f"{p['target']:>6} {p['mac_reduction']:>10.4f} {p['eval_cos']:>9.5f} {p['eval_top1']:>6.3f} "
              f"{str(p['meets_target']):>5} {name:>16} {bcut:>8.4f} {bcos:>8} {ratio:>6.2f} "
              f"{str(k['weight']) + '/' + str(k['activation']) + '/' + str(k['dense']):>10} {p['evaluations']:>5} "
              f"{p['wall_s']:>7.0f} {p['cpu_s']:>7.0f}")
    print(f"(search setup: proxies {setup['wall_s']:.0f} s wall; uniform baselines {uniform_time['wall_s']:.0f} s wall; "
          f"torch threads {torch.get_num_threads()}; the first target's time includes the per-layer sensitivity probes)")

    os.makedirs(args.out, exist_ok=True)
    sens = search.sensitivities()
    result = {"model": "all-MiniLM-L6-v2", "calib_sentences": args.calib, "eval_sentences": args.eval,
              "margin": args.margin, "screen": args.screen, "menu": {k: list(v) for k, v in TASDER_MENU.items()},
              "errors": errors, "uniform": baselines, "uniform_time": uniform_time, "setup_time": setup,
              "sensitivity": dict(sorted(sens.items(), key=lambda t: t[1])), "tasder": plans,
              "torch_threads": torch.get_num_threads(), "seconds": time.time() - t0}
    with open(os.path.join(args.out, args.name + ".json"), "w") as f:
        json.dump(result, f, indent=1)
    plot(result, os.path.join(args.out, args.name + ".png"))
    print(f"\nwrote {args.out}/{args.name}.json and .png ({time.time() - t0:.0f} s)")


def log_partial(out: str, name: str, plans: list) -> None:
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, name + "_partial.json"), "w") as f:
        json.dump(plans, f, indent=1)


def plot(result: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.5))
    rows = result["errors"]["rows"]
    for terms, marker in ((1, "o"), (2, "s"), (3, "^")):
        sel = [r for r in rows if r["terms"] == terms]
        a1.scatter([r["density"] for r in sel], [r["tasd"] for r in sel], marker=marker, label=f"TASD, {terms} term(s)")
        for r in sel:
            a1.annotate(r["series"], (r["density"], r["tasd"]), fontsize=7)
    d = sorted({r["density"] for r in rows})
    by_d = {r["density"]: r for r in rows}
    a1.plot(d, [by_d[x]["single"] for x in d], "k--", lw=1, label="one N:M term, equal density (m=16)")
    a1.plot(d, [by_d[x]["unstructured"] for x in d], "k:", lw=1, label="unstructured, equal density")
    a1.set_xlabel("density (MACs relative to dense)")
    a1.set_ylabel("mean relative weight error")
    a1.set_title("MiniLM per-layer TASD error")
    a1.legend(fontsize=7)
    labels, tasder_cut, uni_cut = [], [], []
    for p in result["tasder"]:
        labels.append(f"target {p['target']}")
        tasder_cut.append(p["mac_reduction"])
        uni_cut.append(p["best_uniform"]["mac_reduction"] if p["best_uniform"] else 0.0)
    x = np.arange(len(labels))
    a2.bar(x - 0.2, tasder_cut, 0.4, label="TASDER plan")
    a2.bar(x + 0.2, uni_cut, 0.4, label="best uniform N:M")
    a2.set_xticks(x, labels)
    a2.set_ylabel("MAC reduction (encoder linears)")
    a2.set_title("TASDER vs uniform, held-out quality >= target")
    a2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
