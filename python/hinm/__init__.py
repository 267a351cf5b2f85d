"""hinm: hierarchical N:M sparsity — compression, sparse-tensor-core metadata, fast CPU/CUDA
GEMM and gyro-permutation search, callable from numpy or torch (DLPack, zero copy)."""

from __future__ import annotations

import logging as _logging
import operator as _operator
import os as _os
import sys as _sys

# hinm's thread pool and torch's OpenMP team share the cores. After each op, libgomp's idle workers
# spin (300,000 rounds by default) before they sleep, taking the cores hinm's helpers need; sleeping
# at once (OMP_WAIT_POLICY=passive) frees them but makes torch's own small ops wait for their workers
# to wake. A short spin keeps both. MiniLM forward (bench_forward.py), 2 Intel cores, dense / HiNM
# 75% ms at 1 / 8 / 32 sentences (two runs each; libgomp's default one run):
#   GOMP_SPINCOUNT=300000  6.3 / 7.4          25.4 / 29.7            164 / 151
#   30000                  5.6-5.8 / 6.3-6.5  24.6-24.8 / 23.7       156-158 / 126-127
#   5000                   5.7-5.8 / 5.3      24.6-25.5 / 20.2-21.0  152-154 / 109-119
#   3000                   7.0-7.5 / 4.8-5.1  26.5-29.1 / 20.0-21.9  155-156 / 120-124
# (passive: dense at 1 sentence ~2x slower). 5000 leaves dense as fast as any setting and HiNM
# 12-18% faster than 30000. The setting is read once, when libgomp loads (with _C below), so it is
# made here, and only when neither the user (OMP_WAIT_POLICY or GOMP_SPINCOUNT) nor an earlier
# torch import has decided it.
_OMP_SPINCOUNT = "5000"
if "torch" not in _sys.modules and not {"OMP_WAIT_POLICY", "GOMP_SPINCOUNT"} & set(_os.environ):
    _os.environ["GOMP_SPINCOUNT"] = _OMP_SPINCOUNT

from . import _C  # noqa: E402
from .hinm_format import HiNMTensor, compress, hinm_mask, retained_saliency
from .nm import NMTensor, compress_nm, nm_mask
from .ops import PrepackedWeight, linear, prepack, spmm
from .pattern import HiNMConfig, NMConfig, parse_config
from .permute import (PermutationResult, balanced_kmeans, linear_sum_assignment, permutation_retained,
                      search_permutation)
from .sptc import (from_semi_structured, sptc_compress, sptc_convert_layout, sptc_decompress, sptc_from_torch,
                   sptc_metadata_from_positions, sptc_metadata_shape, sptc_to_torch, to_semi_structured)
from .tasd import (TASDSeries, parse_series, pseudo_density, series_density, tasd, tasd_activation,
                   tasd_activation_linear, tasd_linear)
from .tasder import LayerPlan, TASDERPlan, TASDERSearch, tasder, uniform_plan

__version__: str = _C.version()

_logging.getLogger("hinm").addHandler(_logging.NullHandler())


# torch-only parts, imported on first use so that `import hinm` does not need torch
_LAZY = {"sparsify_": ("sparsify", "sparsify_"), "SparsifyReport": ("sparsify", "SparsifyReport"),
         "HiNMLinear": ("nn", "HiNMLinear"), "fold_mlp_permutations": ("nn", "fold_mlp_permutations"),
         "save": ("io", "save"), "load": ("io", "load"),
         "distill": ("distillation", "distill"), "DistillConfig": ("distillation", "DistillConfig"),
         "DistillReport": ("distillation", "DistillReport")}


def __getattr__(name: str):
    import importlib

    # hinm.training needs torch, so it is imported on first use, not with hinm.
    if name in ("training", "nn", "io", "sparsify", "calibration", "reconstruct", "saliency", "distillation"):
        return importlib.import_module("." + name, __name__)
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(importlib.import_module("." + module, __name__), attr)
    raise AttributeError(f"module 'hinm' has no attribute {name!r}")


def built_with_cuda() -> bool:
    """True if this build of hinm contains the CUDA kernels."""
    return bool(_C.built_with_cuda())


def cuda_available() -> bool:
    """True if hinm was built with CUDA and a CUDA device is visible (never raises)."""
    return built_with_cuda() and _C.cuda_device_count() > 0


def set_num_threads(n: int) -> None:
    """Threads used by hinm's CPU kernels and searches; n <= 0 restores the default
    (OMP_NUM_THREADS, else all cores). Results do not depend on it."""
    if isinstance(n, bool) or not hasattr(type(n), "__index__"):  # ints and numpy integers
        raise TypeError(f"set_num_threads: n must be an integer, got {n!r}")
    count = _operator.index(n)
    if count >= 2**31:
        raise ValueError(f"set_num_threads: n must be below 2**31, got {count}")
    _C.set_num_threads(max(count, 0))


def get_num_threads() -> int:
    return int(_C.get_num_threads())


__all__ = [
    "__version__", "built_with_cuda", "cuda_available", "set_num_threads", "get_num_threads",
    "NMConfig", "HiNMConfig", "parse_config",
    "nm_mask", "compress_nm", "NMTensor",
    "hinm_mask", "retained_saliency", "compress", "HiNMTensor",
    "linear", "spmm", "prepack", "PrepackedWeight",
    "sptc_compress", "sptc_decompress", "sptc_metadata_from_positions", "sptc_metadata_shape", "sptc_convert_layout",
    "sptc_to_torch", "sptc_from_torch", "to_semi_structured", "from_semi_structured",
    "tasd", "tasd_activation", "tasd_linear", "tasd_activation_linear", "TASDSeries", "parse_series",
    "series_density", "pseudo_density", "tasder", "TASDERPlan", "TASDERSearch", "LayerPlan", "uniform_plan",
    "sparsify_", "SparsifyReport", "HiNMLinear", "fold_mlp_permutations", "save", "load", "distill", "DistillConfig",
    "DistillReport",
    "search_permutation", "PermutationResult", "permutation_retained", "linear_sum_assignment", "balanced_kmeans",
]
