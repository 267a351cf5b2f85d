"""`python -m hinm.info`: version, build options, CUDA architectures, threads and visible GPUs —
what to paste into a bug report."""

from __future__ import annotations

import platform
import sys

from . import _C, __version__, built_with_cuda, cuda_available, get_num_threads


def collect() -> dict:
    return {
        "hinm": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "built_with_cuda": built_with_cuda(),
        "cuda_architectures": _C.cuda_architectures() or "-",
        "cuda_available": cuda_available(),
        "gpus": _C.cuda_device_summary().strip() or "none visible",
        "cpu_kernels": _C.cpu_isa(),
        "threads": get_num_threads(),
    }


def main() -> None:
    info = collect()
    width = max(len(k) for k in info)
    for key, value in info.items():
        sys.stdout.write(f"{key:<{width}}  {value}\n")


if __name__ == "__main__":
    main()
