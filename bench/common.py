"""Shared benchmark helpers: thread setup (same count for hinm, torch and numpy's BLAS), timing
(warm-up, median of repeats), table printing, JSON results under bench/results/, optional plots.

Import this module before numpy/torch: it pins the BLAS thread pools from --threads (default 2)."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence


def _threads_from_argv(default: int = 2) -> int:
    for i, a in enumerate(sys.argv):
        if a == "--threads" and i + 1 < len(sys.argv):
            return int(sys.argv[i + 1])
        if a.startswith("--threads="):
            return int(a.split("=", 1)[1])
    return default


THREADS = _threads_from_argv()
# --cpu-time: time with the process CPU clock instead of the wall clock. On a shared, overloaded
# machine this removes waiting for a core; with one thread it is the kernel's own cost.
CPU_TIME = "--cpu-time" in sys.argv
_clock = time.process_time if CPU_TIME else time.perf_counter
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = str(THREADS)

import numpy as np  # noqa: E402  (after the thread pinning above)


def libgomp_default_spin() -> None:
    """For benchmarks of single products: gives torch's OpenMP workers libgomp's own idle spin
    (300,000 rounds), overriding the short one `import hinm` sets for whole models (see
    hinm/__init__.py). Call before hinm or torch is imported. Alone and back to back, torch's
    matmuls are fastest with it (2 Intel cores: 768x768 at batch 16 101-113 us against 766-936 us
    with 5,000-30,000 rounds, at batch 512 1.6 ms against 3.1-3.8 ms), and hinm's timings do not
    change: every timing starts after an idle pause, so torch's spinning workers are asleep by then.
    A user's GOMP_SPINCOUNT or OMP_WAIT_POLICY is left alone."""
    if not {"GOMP_SPINCOUNT", "OMP_WAIT_POLICY"} & set(os.environ):
        os.environ["GOMP_SPINCOUNT"] = "300000"

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def setup_threads(n: int = THREADS) -> int:
    """Same thread count for hinm and torch (numpy's BLAS is pinned at import)."""
    import hinm

    hinm.set_num_threads(n)
    try:
        import torch

        torch.set_num_threads(n)
    except ImportError:
        pass
    return n


IDLE_PAUSE_S = 0.3


def timeit(fn: Callable[[], object], warmup: int = 2, repeats: int = 7, min_time: float = 0.02) -> float:
    """Median seconds per call. Each repeat runs fn enough times to last about min_time.

    Starts after a short pause: the thread pools of the previous candidate (OpenBLAS, OpenMP) keep
    their workers spinning for up to ~0.1 s after its last call, and those spinners take the cores
    from whatever is timed next (a 2-thread 50 us product measured 2x slower right after numpy)."""
    time.sleep(IDLE_PAUSE_S)
    once = _first_call_seconds(fn, warmup)
    inner = max(1, int(min_time / once))
    if once > 0.2:  # slow calls (big scipy/dense baselines): fewer repeats keep runs short
        repeats = min(repeats, 3)
    samples = []
    for _ in range(repeats):
        t0 = _clock()
        for _ in range(inner):
            fn()
        samples.append((_clock() - t0) / inner)
    return statistics.median(samples)


def _first_call_seconds(fn: Callable[[], object], warmup: int = 2) -> float:
    """Seconds of one call of fn after warmup calls."""
    for _ in range(warmup):
        fn()
    t0 = _clock()
    fn()
    return max(_clock() - t0, 1e-7)


def timeit_rounds(fns: Dict[str, Callable[[], object]], rounds: int = 9, warmup: int = 2,
                  min_time: float = 0.02) -> Dict[str, List[float]]:
    """Seconds per call of every candidate in interleaved rounds: each round times every candidate
    once (after the idle pause, as timeit), so a drift of the machine's speed between seconds hits
    all candidates alike. Returns the per-round samples; compare candidates round by round
    (round_ratio) rather than through medians taken at different moments."""
    inner = {}
    for name, fn in fns.items():
        time.sleep(IDLE_PAUSE_S)
        inner[name] = max(1, int(min_time / _first_call_seconds(fn)))
    samples: Dict[str, List[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            time.sleep(IDLE_PAUSE_S)
            for _ in range(warmup):  # caches and thread pool back after the pause
                fn()
            t0 = _clock()
            for _ in range(inner[name]):
                fn()
            samples[name].append((_clock() - t0) / inner[name])
    return samples


def round_ratio(samples: Dict[str, List[float]], baselines: Sequence[str], name: str) -> float:
    """Median over rounds of (fastest baseline in that round) / (name in that round)."""
    per_round = [min(samples[b][i] for b in baselines) / t for i, t in enumerate(samples[name])]
    return statistics.median(per_round)


def print_table(rows: Sequence[Dict[str, object]], columns: Sequence[str], title: str = "") -> str:
    """Prints (and returns) a fixed-width table of rows (dicts) restricted to columns."""
    def fmt(v: object) -> str:
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
        return str(v)

    cells = [[fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    lines = []
    if title:
        lines.append(title)
    lines.append("  ".join(c.rjust(w) for c, w in zip(columns, widths)))
    lines.extend("  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in cells)
    text = "\n".join(lines)
    print(text, flush=True)
    return text


def machine() -> Dict[str, object]:
    import hinm

    info: Dict[str, object] = {"python": platform.python_version(), "machine": platform.machine(),
                               "cpu_count": os.cpu_count(), "threads": THREADS, "cpu_time": CPU_TIME, "hinm": hinm.__version__,
                               "numpy": np.__version__}
    try:
        from hinm import _C

        info["cpu_isa"] = _C.cpu_isa()
    except AttributeError:
        pass
    try:
        import torch

        info["torch"] = torch.__version__
    except ImportError:
        pass
    return info


def result_name(base: str, threads: int) -> str:
    """bench/results file stem: the benchmark, its thread count and the clock used."""
    return f"{base}_t{threads}" + ("_cpu" if CPU_TIME else "")


def write_json(name: str, rows: List[Dict[str, object]], extra: Optional[Dict[str, object]] = None) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    payload = {"benchmark": name, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "machine": machine(), "rows": rows}
    if extra:
        payload.update(extra)
    path.write_text(json.dumps(payload, indent=1))
    print(f"wrote {path}", flush=True)
    return path


def plot_lines(path: Path, series: Dict[str, Sequence[tuple]], xlabel: str, ylabel: str, title: str,
               logx: bool = True, hline: Optional[float] = 1.0) -> Optional[Path]:
    """One line per series (list of (x, y)); returns None (and says so) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot", flush=True)
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, pts in series.items():
        xs, ys = zip(*pts)
        ax.plot(xs, ys, marker="o", label=label)
    if logx:
        ax.set_xscale("log", base=2)
    if hline is not None:
        ax.axhline(hline, color="grey", lw=0.8, ls="--")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"wrote {path}", flush=True)
    return path


def dense_candidates(w: np.ndarray, x: np.ndarray) -> Dict[str, Callable[[], object]]:
    """y = x @ wᵀ with torch.matmul (pre-transposed view, as F.linear) and numpy.matmul, float32."""
    wt_np = np.ascontiguousarray(w.T)
    fns: Dict[str, Callable[[], object]] = {"numpy": lambda: np.matmul(x, wt_np)}
    try:
        import torch
    except ImportError:
        return fns
    tw, tx = torch.from_numpy(w), torch.from_numpy(x)

    def torch_linear() -> object:
        with torch.inference_mode():
            return torch.nn.functional.linear(tx, tw)

    fns["torch"] = torch_linear
    return fns


def dense_baselines(w: np.ndarray, x: np.ndarray) -> Dict[str, float]:
    """Median seconds of every dense candidate (dense_candidates) on the same threads."""
    return {name: timeit(fn) for name, fn in dense_candidates(w, x).items()}


def ratio_columns(row: Dict[str, object], base: float, sparse: Dict[str, float]) -> None:
    for name, t in sparse.items():
        row[name] = round(base / t, 2)


def batches(args_batches: Optional[Iterable[int]], default: Sequence[int]) -> List[int]:
    return list(args_batches) if args_batches else list(default)
