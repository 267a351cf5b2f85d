"""CUDA HiNM SpMM vs torch.matmul f16 (cuBLAS) and torch 2:4 semi-structured sparse matmul, in one run.

Y = W X with W [R, K] (BERT-base and LLaMA-7B shapes), X [K, batch]. Every figure is a ratio against
cuBLAS dense f16 timed in the same run; TFLOPS are dense-equivalent (2*R*K*batch / time).

    python bench/bench_gpu.py [--quick] [--out bench/results]

Exits 0 with a message when no CUDA device is usable."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

SHAPES = {  # name: (R = out, K = in)
    "bert-768x768": (768, 768),
    "bert-3072x768": (3072, 768),
    "bert-768x3072": (768, 3072),
    "llama-4096x4096": (4096, 4096),
    "llama-11008x4096": (11008, 4096),
    "llama-4096x11008": (4096, 11008),
}
BATCHES = (16, 64, 256, 512, 1024, 2048, 4096)
VS = (64, 128)
SPARSITIES = {"75%": 0.5, "87.5%": 0.25}  # vec_density with 2:4


def gpu_or_exit():
    try:
        import torch
    except ImportError:
        print("bench_gpu: torch is not installed; nothing to do")
        sys.exit(0)
    import hinm

    if not hinm.built_with_cuda():
        print("bench_gpu: hinm was built without CUDA; nothing to do")
        sys.exit(0)
    if not (torch.cuda.is_available() and hinm.cuda_available()):
        print("bench_gpu: no CUDA device is available; nothing to do")
        sys.exit(0)
    return torch, hinm


def random_hinm(torch, hinm, rows, cols, v, vec_density, device):
    """A random 2:4 HiNM weight (canonical fields; speed does not depend on the values)."""
    from types import SimpleNamespace

    class W(SimpleNamespace):
        pass

    cfg = hinm.HiNMConfig(v=v, vec_density=vec_density)
    kept = cfg.kept_columns(cols)
    tiles = -(-rows // v)
    g = torch.Generator().manual_seed(rows * 7 + cols)
    col_idx = torch.stack([torch.randperm(cols, generator=g)[:kept] for _ in range(tiles)]).to(torch.int32)
    pairs = torch.tensor([[0, 1], [0, 2], [0, 3], [1, 2], [1, 3], [2, 3]], dtype=torch.uint8)
    pos = pairs[torch.randint(0, 6, (tiles * v, kept // 4), generator=g)].reshape(tiles * v, kept // 2)
    vals = torch.randn(tiles * v, kept // 2, generator=g).half()
    return W(values=vals, indices=pos, col_idx=col_idx, row_perm=torch.randperm(rows, generator=g), shape=(rows, cols),
             config=cfg)


def time_ms(torch, fn, reps):
    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    best = math.inf
    for _ in range(3):
        start.record()
        for _ in range(reps):
            fn()
        end.record()
        end.synchronize()
        best = min(best, start.elapsed_time(end) / reps)
    return best


def semi_structured(torch, w_dense):
    try:
        from torch.sparse import to_sparse_semi_structured

        mask = torch.zeros_like(w_dense, dtype=torch.bool).view(-1, 4)
        mask[:, :2] = True
        return to_sparse_semi_structured(w_dense * mask.view_as(w_dense))
    except Exception as e:  # noqa: BLE001 - an unsupported GPU/shape is reported, not fatal
        print(f"  torch 2:4 unavailable: {type(e).__name__}: {e}")
        return None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer shapes and batches")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = ap.parse_args(argv)
    torch, hinm = gpu_or_exit()
    from hinm import _cuda

    dev = torch.device("cuda")
    shapes = dict(list(SHAPES.items())[3:5]) if args.quick else SHAPES
    batches = (16, 512, 4096) if args.quick else BATCHES
    rows_out = []
    print(f"device: {torch.cuda.get_device_name(dev)}  torch {torch.__version__}  hinm {hinm.__version__}")
    for name, (r, k) in shapes.items():
        w_dense = torch.randn(r, k, device=dev).half()
        sparse24 = semi_structured(torch, w_dense)
        weights = {(v, sp): random_hinm(torch, hinm, r, k, v, d, dev) for v in VS for sp, d in SPARSITIES.items()}
        for wt in weights.values():
            _cuda.device_weight(wt, dev)
        for n in batches:
            x = torch.randn(k, n, device=dev).half()
            reps = max(3, min(200, int(2e10 / (2 * r * k * n))))
            flops = 2.0 * r * k * n
            t_dense = time_ms(torch, lambda: torch.matmul(w_dense, x), reps)
            t_24 = time_ms(torch, lambda: torch.mm(sparse24, x), reps) if sparse24 is not None else None
            row = {"shape": name, "R": r, "K": k, "batch": n, "cublas_ms": t_dense,
                   "cublas_tflops": flops / t_dense / 1e9, "torch24_ms": t_24,
                   "torch24_tflops": flops / t_24 / 1e9 if t_24 else None}
            y = torch.empty(r, n, device=dev).half()
            for (v, sp), wt in weights.items():
                t = time_ms(torch, lambda: _cuda.spmm_cuda(wt, x, out=y), reps)
                row[f"hinm_v{v}_{sp}_ms"] = t
                row[f"hinm_v{v}_{sp}_tflops"] = flops / t / 1e9
                row[f"hinm_v{v}_{sp}_vs_cublas"] = t_dense / t
                row[f"hinm_v{v}_{sp}_vs_torch24"] = t_24 / t if t_24 else None
            rows_out.append(row)
            print_row(row)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"device": torch.cuda.get_device_name(dev), "torch": torch.__version__, "hinm": hinm.__version__,
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    (out / "bench_gpu.json").write_text(json.dumps({"meta": meta, "rows": rows_out}, indent=1))
    print_tables(rows_out)
    plot(rows_out, out / "bench_gpu.png")
    print(f"wrote {out / 'bench_gpu.json'}")


def print_row(row):
    parts = [f"{row['shape']:>18} b={row['batch']:>5} cuBLAS {row['cublas_tflops']:7.1f} TF"]
    if row["torch24_tflops"]:
        parts.append(f"2:4 {row['torch24_tflops']:7.1f} TF")
    for key in row:
        if key.endswith("_tflops") and key.startswith("hinm"):
            parts.append(f"{key[5:-7]} {row[key]:7.1f} TF")
    print("  ".join(parts), flush=True)


def print_tables(rows):
    keys = [k[:-len("_vs_cublas")] for k in rows[0] if k.endswith("_vs_cublas")] if rows else []
    for base, label in (("_vs_cublas", "speedup vs cuBLAS f16"), ("_vs_torch24", "speedup vs torch 2:4")):
        print(f"\n{label}")
        print(f"{'shape':>18} {'batch':>6} " + " ".join(f"{k[5:]:>14}" for k in keys))
        for row in rows:
            vals = [row[k + base] for k in keys]
            print(f"{row['shape']:>18} {row['batch']:>6} " +
                  " ".join(f"{v:14.2f}" if v is not None else f"{'-':>14}" for v in vals))


def plot(rows, path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot")
        return
    shapes = sorted({r["shape"] for r in rows}, key=lambda s: list(SHAPES).index(s))
    fig, axes = plt.subplots(1, len(shapes), figsize=(4 * len(shapes), 3.5), squeeze=False)
    keys = [k[:-len("_vs_cublas")] for k in rows[0] if k.endswith("_vs_cublas")]
    for ax, shape in zip(axes[0], shapes):
        rs = [r for r in rows if r["shape"] == shape]
        for k in keys:
            ax.plot([r["batch"] for r in rs], [r[k + "_vs_cublas"] for r in rs], marker="o", label=k[5:])
        if rs[0]["torch24_ms"]:
            ax.plot([r["batch"] for r in rs], [r["cublas_ms"] / r["torch24_ms"] for r in rs], "k--", label="torch 2:4")
        ax.axhline(1.0, color="grey", lw=0.5)
        ax.set_xscale("log", base=2)
        ax.set_title(shape)
        ax.set_xlabel("batch")
    axes[0][0].set_ylabel("speedup vs cuBLAS f16")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
