"""Permutation search for HiNM and plain N:M masks: gyro-permutation (output-channel clustering,
per-tile input-channel assignment, local refinement) and the identity / random / Apex-style
channel-swap baselines, plus the assignment and balanced k-means building blocks.

All the work runs in the multithreaded C++ core; results for a seed do not depend on the number
of threads (``hinm.set_num_threads``)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence, Tuple, Union

import numpy as np

from . import _C
from ._arrays import as_array, dtype_name, is_torch, require_2d
from .pattern import Config, HiNMConfig, NMConfig, parse_config

_log = logging.getLogger("hinm")

METHODS = ("gyro", "channel_swap", "random", "identity")
DEFAULT_SCHEDULE = (8, 1, 4, 1, 2, 1, 1)
EFFORTS = ("default", "fast")


def effort_limits(effort: str, rows: int, cols: int) -> dict:
    """Stage limits of an ``effort`` of search_permutation for an [rows, cols] weight.

    "default": the full search. "fast": 8 clustering rounds, a short ICP (``icp_fail_limit=3``),
    no refinement or row swaps; the OCP and a short annealing (300 moves per row) only on wide
    weights (cols > rows: few tiles of many columns, where the ICP dominates the time and they
    pay off), the clustering alone regrouping the rows of square and tall ones. On MiniLM's
    layer-0 shapes (v = 32, 64; 75 %) 1.2-12x faster than "default" (the most on square and tall
    weights), keeping 87-99 % of its gain over the identity, and above the retained saliency of
    the official implementation (sminy67/hinm_sp) on the 11 layers and configs compared."""
    if effort not in EFFORTS:
        raise ValueError(f"effort must be one of {', '.join(EFFORTS)}, got {effort!r}")
    if effort == "default":
        return dict(schedule=DEFAULT_SCHEDULE, ocp_fail_limit=1, icp_fail_limit=30, refine_rounds=30,
                    cluster_rounds=50, swap_rounds=20, anneal_moves=1000)
    wide = cols > rows
    return dict(schedule=DEFAULT_SCHEDULE if wide else (), ocp_fail_limit=1, icp_fail_limit=3, refine_rounds=0,
                cluster_rounds=8, swap_rounds=0, anneal_moves=300 if wide else 0)


@dataclass(frozen=True)
class PermutationResult:
    """A searched permutation. ``row_perm[s]`` is the original row in slot s (tile s // v);
    ``col_orders[t]`` is a permutation of range(K) whose order lists tile t's kept columns;
    ``retained`` is the saliency the HiNM (or N:M) mask keeps; ``history`` is a tuple of
    (stage, retained, seconds) along the search, retained non-decreasing."""

    row_perm: np.ndarray
    col_orders: np.ndarray
    retained: float
    history: Tuple[Tuple[str, float, float], ...]

    @property
    def col_perm(self) -> np.ndarray:
        """The single column permutation of a plain N:M result (one tile); multi-tile results have
        no such attribute (AttributeError, so ``getattr(result, "col_perm", None)`` works)."""
        if self.col_orders.shape[0] != 1:
            raise AttributeError(f"col_perm exists for single-tile results only; this one has "
                             f"{self.col_orders.shape[0]} tiles (use col_orders)")
        return self.col_orders[0]


def _require_count(name: str, value: Any, limit: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value < limit:
        raise ValueError(f"{name} must be an integer in [0, {limit}), got {value!r}")


def _scores_of(weight: Any, scores: Any) -> np.ndarray:
    weight = as_array(weight, "weight")
    require_2d(weight, "weight")
    if scores is None:
        if is_torch(weight):
            return np.ascontiguousarray(weight.detach().float().abs().cpu().numpy())
        if dtype_name(weight) not in ("float16", "float32", "float64") and not np.issubdtype(weight.dtype, np.integer):
            raise TypeError(f"weight: dtype {dtype_name(weight)} is not numeric")
        return np.ascontiguousarray(np.abs(np.asarray(weight, dtype=np.float64)))
    s = as_array(scores, "scores")
    if tuple(s.shape) != tuple(weight.shape):
        raise ValueError(f"scores must have the weight's shape {tuple(weight.shape)}, got {tuple(s.shape)}")
    if is_torch(s):
        s = s.detach().double().cpu().numpy()
    s = np.asarray(s)
    if s.dtype == np.bool_ or not np.issubdtype(s.dtype, np.number):
        raise TypeError(f"scores: dtype {s.dtype} is not a numeric score type")
    if s.dtype not in (np.float32, np.float64):
        s = s.astype(np.float64)
    return np.ascontiguousarray(s)


def _geometry(config: Config, rows: int, cols: int) -> Tuple[int, int]:
    """(v, Kt) of the search for this config and weight shape."""
    if isinstance(config, NMConfig):
        if cols % config.m:
            raise ValueError(f"weight has {cols} columns, not a multiple of m={config.m} for {config}")
        return rows, cols
    kept = config.kept_columns(cols)
    return config.v, kept


def _progress_callback(progress: Union[bool, Callable, None]):
    if progress is None or progress is False:
        return None, None
    if callable(progress):
        return progress, None
    from tqdm.auto import tqdm

    bar = tqdm(desc="gyro", unit="step")

    def update(stage: str, step: int, retained: float) -> None:
        bar.set_postfix(stage=stage, retained=f"{retained:.6g}", refresh=False)
        bar.update(1)

    return update, bar


def search_permutation(weight: Any, config: Union[str, Config], method: str = "gyro", scores: Any = None,
                       seed: int = 0, time_budget: Optional[float] = None,
                       progress: Union[bool, Callable[[str, int, float], None]] = False, *,
                       effort: str = "default", schedule: Optional[Sequence[int]] = None,
                       ocp_fail_limit: Optional[int] = None, icp_fail_limit: Optional[int] = None,
                       refine_rounds: Optional[int] = None, window_search: Optional[bool] = None,
                       ocp_objective: str = "vector", cluster_rounds: Optional[int] = None,
                       swap_rounds: Optional[int] = None, anneal_moves: Optional[int] = None,
                       anneal_temperature: float = 0.018, anneal_max_tiles: int = 12) -> PermutationResult:
    """Search row and per-tile column permutations that maximise the saliency kept by ``config``.

    ``weight`` is [R, K] (numpy or torch); ``scores`` defaults to |weight|. ``method``:
    ``"gyro"`` (OCP by sampled balanced clustering + assignment on the schedule, vector pruning,
    clustering of rows into tiles on the top-k objective, simulated annealing of row swaps
    between tiles on the same objective, per-tile ICP by assignment then pairwise column swaps,
    then rows -> tiles refinement and row swaps between tiles),
    ``"channel_swap"`` (identity rows; Apex-style greedy column swaps in every tile, plus the
    exhaustive search over pairs of groups when ``window_search``), ``"random"`` or ``"identity"``.
    For an NMConfig all rows form one tile and the result's ``col_perm`` is the column order.
    ``effort`` sets the gyro stage limits below: ``"default"`` (the full search) or ``"fast"``
    (8 clustering rounds, ``icp_fail_limit=3``, no refinement or row swaps, and the OCP and a
    short annealing on wide weights only: on MiniLM 1.2-12x faster, keeping 87-99 % of the gain
    over the identity; see ``hinm.permute.effort_limits``); a stage keyword given explicitly
    overrides its effort value.
    ``time_budget`` (seconds) is checked between iterations. ``progress=True`` shows a tqdm bar;
    a callable gets (stage, step, retained). Tuning: ``schedule`` (OCP samples per tile, coarse
    to fine), ``ocp_fail_limit`` (non-improving OCP steps ending each schedule entry),
    ``ocp_objective`` ("vector": accept OCP steps that keep more saliency at the vector level, as
    the official code; "hinm": the full HiNM retained saliency), ``cluster_rounds``
    (Lloyd rounds after OCP: every tile's kept set fixed, rows are reassigned to the tiles where
    their Kt*n/m largest kept scores are largest, then the kept sets follow; 0 = off),
    ``anneal_moves`` (after the clustering: simulated annealing of row swaps between tiles on the
    same objective with exact kept sets, this many proposals per row, scaled by 384 / K above 384
    columns; 0 = off; run for at most ``anneal_max_tiles`` tiles) and ``anneal_temperature`` (its
    initial temperature relative to a row's mean top-k value),
    ``icp_fail_limit`` (non-improving ICP assignment steps ending a tile's search; scaled by
    (48 / groups)^2 for tiles of more than 48 groups of m kept columns), ``refine_rounds`` (rows -> tiles reassignments), ``swap_rounds`` (rounds of
    exact-gain row swaps between tiles followed by an ICP of the changed tiles; 0 = off),
    ``window_search`` (exhaustive re-partition of pairs of groups after the column swaps in every
    tile; default on for channel_swap, off for gyro)."""
    config = parse_config(config)
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    s = _scores_of(weight, scores)
    rows, cols = s.shape
    limits = effort_limits(effort, rows, cols)
    schedule = limits["schedule"] if schedule is None else schedule
    ocp_fail_limit = limits["ocp_fail_limit"] if ocp_fail_limit is None else ocp_fail_limit
    icp_fail_limit = limits["icp_fail_limit"] if icp_fail_limit is None else icp_fail_limit
    refine_rounds = limits["refine_rounds"] if refine_rounds is None else refine_rounds
    cluster_rounds = limits["cluster_rounds"] if cluster_rounds is None else cluster_rounds
    swap_rounds = limits["swap_rounds"] if swap_rounds is None else swap_rounds
    anneal_moves = limits["anneal_moves"] if anneal_moves is None else anneal_moves
    if rows < 1 or cols < 1:
        raise ValueError(f"weight must be non-empty, got shape {s.shape}")
    v, kept = _geometry(config, rows, cols)
    if time_budget is not None and not time_budget >= 0:
        raise ValueError(f"time_budget must be >= 0 seconds or None, got {time_budget!r}")
    counts = dict(ocp_fail_limit=ocp_fail_limit, icp_fail_limit=icp_fail_limit, refine_rounds=refine_rounds,
                  cluster_rounds=cluster_rounds, swap_rounds=swap_rounds, anneal_moves=anneal_moves,
                  anneal_max_tiles=anneal_max_tiles)
    for name, value in counts.items():
        _require_count(name, value, 2**31)
    _require_count("seed", seed, 2**64)  # the C++ generator takes 64 bits: larger seeds would alias
    if not (np.isfinite(anneal_temperature) and anneal_temperature >= 0):
        raise ValueError(f"anneal_temperature must be >= 0 (finite), got {anneal_temperature}")
    schedule = [int(x) for x in schedule]
    if any(x < 1 for x in schedule):
        raise ValueError(f"schedule entries must be >= 1, got {schedule}")
    if window_search is None:
        window_search = method == "channel_swap"
    tiles = -(-rows // min(v, rows))
    row_perm = np.empty(rows, dtype=np.int64)
    col_orders = np.empty((tiles, cols), dtype=np.int64)
    callback, bar = _progress_callback(progress)
    try:
        retained, history = _C.search_permutation(
            s, int(v), int(kept), config.n, config.m, method, int(seed),
            -1.0 if time_budget is None else float(time_budget), schedule, int(ocp_fail_limit),
            int(icp_fail_limit), int(refine_rounds), bool(window_search), str(ocp_objective),
            int(cluster_rounds), int(swap_rounds), int(anneal_moves), float(anneal_temperature),
            int(anneal_max_tiles), callback,
            row_perm, col_orders)
    finally:
        if bar is not None:
            bar.close()
    _log.debug("search_permutation %s %s on %s: retained %.6g", method, config, s.shape, retained)
    return PermutationResult(row_perm, col_orders, float(retained), tuple(tuple(h) for h in history))


def permutation_retained(scores: Any, config: Union[str, Config], row_perm: Any = None,
                         col_orders: Any = None) -> float:
    """Saliency kept by the mask of ``config`` under (row_perm, col_orders) (identity when None),
    computed by the search's own evaluation."""
    config = parse_config(config)
    s = _scores_of(np.zeros(np.shape(scores)), scores)
    rows, cols = s.shape
    v, kept = _geometry(config, rows, cols)
    tiles = -(-rows // min(v, rows))
    rp = np.arange(rows, dtype=np.int64) if row_perm is None else np.ascontiguousarray(row_perm, dtype=np.int64)
    if col_orders is None:
        co = np.tile(np.arange(cols, dtype=np.int64), (tiles, 1))
    else:
        co = np.ascontiguousarray(np.reshape(col_orders, (tiles, cols)), dtype=np.int64)
    return float(_C.permutation_retained(s, int(v), int(kept), config.n, config.m, rp, co))


def linear_sum_assignment(cost: Any, maximize: bool = False) -> Tuple[np.ndarray, np.ndarray]:
    """Optimal assignment on a (rectangular) cost matrix, scipy.optimize.linear_sum_assignment's
    contract: (row_ind, col_ind), row_ind ascending, min(R, C) pairs."""
    c = np.asarray(to_float64(cost))
    if c.ndim != 2:
        raise ValueError(f"cost must be 2-D, got shape {c.shape}")
    c = np.ascontiguousarray(c, dtype=np.float64)
    col_for_row = np.empty(c.shape[0], dtype=np.int64)
    if c.size:
        _C.linear_assignment(c, bool(maximize), col_for_row)
    else:
        col_for_row[:] = -1
    rows = np.nonzero(col_for_row >= 0)[0].astype(np.int64)
    return rows, col_for_row[rows]


def to_float64(x: Any) -> np.ndarray:
    x = as_array(x, "cost")
    if is_torch(x):
        return x.detach().double().cpu().numpy()
    x = np.asarray(x)
    if x.dtype == np.bool_ or not np.issubdtype(x.dtype, np.number):
        raise TypeError(f"expected a numeric array, got dtype {x.dtype}")
    return x.astype(np.float64, copy=False)


def balanced_kmeans(points: Any, k: int, seed: int = 0, max_iter: int = 20, tol: float = 1e-4) -> np.ndarray:
    """Cluster labels (int32 [N]) of N points into k clusters of exactly N / k points each."""
    x = np.ascontiguousarray(to_float64(points))
    if x.ndim != 2:
        raise ValueError(f"points must be 2-D [N, dim], got shape {x.shape}")
    k = int(k)
    if k < 1 or x.shape[0] % k:
        raise ValueError(f"k must divide the number of points ({x.shape[0]}), got k={k}")
    _require_count("seed", seed, 2**64)
    _require_count("max_iter", max_iter, 2**31)
    labels = np.empty(x.shape[0], dtype=np.int32)
    _C.balanced_kmeans(x, k, x.shape[0] // k, int(seed), int(max_iter), float(tol), labels)
    return labels
