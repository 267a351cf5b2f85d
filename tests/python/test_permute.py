"""Permutation search (gyro, channel swap, baselines), the assignment solver and balanced k-means,
against scipy and a slow numpy reference of the HiNM mask. Budget: about 20 s."""

import itertools
import time

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment as scipy_lsa

import hinm

from conftest import needs_torch


def ref_hinm_mask(scores, v, kt, n, m, row_perm, col_orders):
    """The HiNM mask semantics, directly: tile t = rows row_perm[t*v:(t+1)*v]; keep the kt columns
    of largest column sum (ties: lower index) in col_orders[t] order; n of every m along rows."""
    rows_total, k = scores.shape
    mask = np.zeros(scores.shape, bool)
    for t in range(-(-rows_total // v)):
        rows = row_perm[t * v:(t + 1) * v]
        sums = scores[rows].sum(axis=0, dtype=np.float64)
        kept = sorted(range(k), key=lambda c: (-sums[c], c))[:kt]
        rank = {c: i for i, c in enumerate(col_orders[t])}
        kept.sort(key=lambda c: rank[c])
        for r in rows:
            for g in range(0, kt, m):
                cols = kept[g:g + m]
                top = sorted(range(m), key=lambda j: (-scores[r, cols[j]], j))[:n]
                for j in top:
                    mask[r, cols[j]] = True
    return mask


def check_result(res, scores, v, kt, n, m):
    r, k = scores.shape
    t = -(-r // min(v, r))
    assert res.row_perm.dtype == np.int64 and res.col_orders.dtype == np.int64
    np.testing.assert_array_equal(np.sort(res.row_perm), np.arange(r))
    assert res.col_orders.shape == (t, k)
    for order in res.col_orders:
        np.testing.assert_array_equal(np.sort(order), np.arange(k))
    mask = ref_hinm_mask(scores, min(v, r), kt, n, m, res.row_perm, res.col_orders)
    # HiNM structure: per tile exactly kt columns carry weights... and n of every m per row.
    for ti in range(t):
        rows = res.row_perm[ti * v:(ti + 1) * v]
        assert mask[rows].any(axis=0).sum() <= kt
        assert (mask[rows].sum(axis=1) == kt // m * n).all()
    assert res.retained == pytest.approx(float(scores[mask].sum(dtype=np.float64)), rel=1e-12)
    hist = [h[1] for h in res.history]
    assert all(b >= a for a, b in zip(hist, hist[1:]))
    assert hist[-1] == pytest.approx(res.retained, rel=1e-12)


# ---- assignment ---------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(1, 1), (6, 6), (40, 40), (7, 3), (3, 9), (25, 60), (60, 25)])
@pytest.mark.parametrize("kind", ["random", "tied", "large"])
def test_linear_sum_assignment_matches_scipy(rng, shape, kind):
    if kind == "random":
        cost = rng.random(shape)
    elif kind == "tied":
        cost = rng.integers(0, 3, shape).astype(np.float64)
    else:
        cost = 1e12 + rng.random(shape) * 1e9
    for maximize in (False, True):
        r, c = hinm.linear_sum_assignment(cost, maximize=maximize)
        r2, c2 = scipy_lsa(cost, maximize=maximize)
        assert len(r) == min(shape)
        np.testing.assert_array_equal(r, np.sort(r))
        assert len(set(c.tolist())) == len(c)
        assert cost[r, c].sum() == pytest.approx(cost[r2, c2].sum(), rel=1e-12, abs=1e-9)


def test_linear_sum_assignment_bad_input():
    with pytest.raises(ValueError):
        hinm.linear_sum_assignment(np.array([[1.0, np.nan], [0.0, 1.0]]))
    with pytest.raises(ValueError):
        hinm.linear_sum_assignment(np.ones(3))
    r, c = hinm.linear_sum_assignment(np.zeros((0, 4)))
    assert len(r) == len(c) == 0


# ---- balanced k-means ---------------------------------------------------------------------------

def test_balanced_kmeans_equal_sizes_deterministic_and_finds_blobs(rng, threads):
    centers = rng.standard_normal((6, 5)) * 10
    pts = np.repeat(centers, 8, axis=0) + rng.standard_normal((48, 5)) * 0.1
    perm = rng.permutation(48)
    labels = hinm.balanced_kmeans(pts[perm], 6, seed=3)
    assert (np.bincount(labels, minlength=6) == 8).all()
    np.testing.assert_array_equal(labels, hinm.balanced_kmeans(pts[perm], 6, seed=3))
    # Points of the same blob share a cluster.
    blob = np.repeat(np.arange(6), 8)[perm]
    for b in range(6):
        assert len(set(labels[blob == b].tolist())) == 1
    noise = rng.random((40, 3))
    assert (np.bincount(hinm.balanced_kmeans(noise, 5, seed=1), minlength=5) == 8).all()
    with pytest.raises(ValueError):
        hinm.balanced_kmeans(noise, 3)


# ---- search -------------------------------------------------------------------------------------

CASES = [  # (R, K, config)
    (128, 64, hinm.HiNMConfig(32, 0.5, 2, 4)),
    (100, 48, hinm.HiNMConfig(32, 0.5, 2, 4)),   # last tile of 4 rows
    (96, 64, hinm.HiNMConfig(16, 0.25, 1, 4)),
    (64, 80, hinm.HiNMConfig(16, 0.5, 2, 8)),
    (32, 64, hinm.NMConfig(2, 4)),
]


@pytest.mark.parametrize("method", ["gyro", "channel_swap", "random", "identity"])
@pytest.mark.parametrize("r,k,cfg", CASES)
def test_search_invariants_and_reference_mask(rng, method, r, k, cfg):
    scores = rng.random((r, k))
    res = hinm.search_permutation(scores, cfg, method=method, seed=5)
    v = r if isinstance(cfg, hinm.NMConfig) else cfg.v
    kt = k if isinstance(cfg, hinm.NMConfig) else cfg.kept_columns(k)
    check_result(res, scores, v, kt, cfg.n, cfg.m)
    assert res.retained == pytest.approx(
        hinm.permutation_retained(scores, cfg, res.row_perm, res.col_orders), rel=1e-12)
    ident = hinm.search_permutation(scores, cfg, method="identity").retained
    if method in ("gyro", "channel_swap"):
        assert res.retained >= ident
    if isinstance(cfg, hinm.NMConfig):
        np.testing.assert_array_equal(res.row_perm, np.arange(r))
        assert res.col_perm.shape == (k,)


def test_gyro_improves_and_is_deterministic_across_threads(rng):
    w = rng.standard_normal((256, 128)).astype(np.float32)
    w *= rng.random((256, 1)) * rng.random((1, 128)) * 4  # row/column scale structure
    cfg = hinm.HiNMConfig(32, 0.5, 2, 4)
    results = []
    for threads in (1, 2):
        hinm.set_num_threads(threads)
        results.append(hinm.search_permutation(w, cfg, seed=11))
    hinm.set_num_threads(0)
    a, b = results
    np.testing.assert_array_equal(a.row_perm, b.row_perm)
    np.testing.assert_array_equal(a.col_orders, b.col_orders)
    assert a.retained == b.retained
    assert [h[:2] for h in a.history] == [h[:2] for h in b.history]
    ident = hinm.search_permutation(w, cfg, method="identity").retained
    rand = hinm.search_permutation(w, cfg, method="random", seed=1).retained
    assert a.retained > ident * 1.01 and a.retained > rand


@pytest.mark.parametrize("r,k,cfg", CASES)
def test_fast_effort_invariants_not_below_identity_and_deterministic(rng, r, k, cfg):
    scores = rng.random((r, k)) ** 2
    v = r if isinstance(cfg, hinm.NMConfig) else cfg.v
    kt = k if isinstance(cfg, hinm.NMConfig) else cfg.kept_columns(k)
    runs = []
    for threads in (1, 2):
        hinm.set_num_threads(threads)
        runs.append(hinm.search_permutation(scores, cfg, seed=4, effort="fast"))
    hinm.set_num_threads(0)
    a, b = runs
    check_result(a, scores, v, kt, cfg.n, cfg.m)
    np.testing.assert_array_equal(a.row_perm, b.row_perm)
    np.testing.assert_array_equal(a.col_orders, b.col_orders)
    assert a.retained == b.retained
    again = hinm.search_permutation(scores, cfg, seed=4, effort="fast")
    np.testing.assert_array_equal(again.col_orders, a.col_orders)
    assert a.retained >= hinm.search_permutation(scores, cfg, method="identity").retained
    stages = {h[0] for h in a.history}
    assert not {"refine", "row_swap"} & stages
    if k <= r:  # the OCP and the annealing run on wide weights only
        assert not {"ocp", "anneal"} & stages


def test_fast_effort_keeps_explicit_stage_keywords(rng):
    w = rng.random((128, 64)) ** 3
    cfg = hinm.HiNMConfig(32, 0.5, 2, 4)
    fast = hinm.search_permutation(w, cfg, effort="fast")
    assert "cluster" in [h[0] for h in fast.history]
    no_cluster = hinm.search_permutation(w, cfg, effort="fast", cluster_rounds=0)
    assert "cluster" not in [h[0] for h in no_cluster.history]
    with_ocp = hinm.search_permutation(w, cfg, effort="fast", schedule=(2, 1))
    assert "ocp" in [h[0] for h in with_ocp.history]
    default = hinm.search_permutation(w, cfg)
    assert default.retained >= fast.retained
    with pytest.raises(ValueError, match="effort"):
        hinm.search_permutation(w, cfg, effort="turbo")
    wide = hinm.search_permutation(w.T.copy(), cfg, effort="fast")
    assert "ocp" in [h[0] for h in wide.history]


def planted_hinm(rng, r=256, k=256, v=64, vec_density=0.5):
    """An exactly HiNM-representable (v, vec_density, 2:4) weight, then rows and columns shuffled."""
    w = np.zeros((r, k))
    kt = int(k * vec_density)
    for t in range(r // v):
        cols = np.sort(rng.choice(k, kt, replace=False))
        for row in range(t * v, (t + 1) * v):
            for g in range(kt // 4):
                keep = rng.choice(4, 2, replace=False)
                w[row, cols[g * 4 + keep]] = rng.random(2) + 0.5
    return w[rng.permutation(r)][:, rng.permutation(k)], float(w.sum())


def test_planted_structure_is_recovered(rng):
    w, planted = planted_hinm(rng)
    cfg = hinm.HiNMConfig(64, 0.5, 2, 4)
    ident = hinm.search_permutation(w, cfg, method="identity").retained / planted
    got = hinm.search_permutation(w, cfg, seed=0).retained / planted
    assert ident < 0.75
    assert got >= 0.9, f"recovered {got:.3f} of the planted retained saliency (identity {ident:.3f})"


def ref_topk_objective(scores, v, kt, n, m, row_perm):
    """Clustering objective: per tile and row, the kt*n/m largest scores among the tile's kept columns."""
    total = 0.0
    for t in range(0, len(row_perm), v):
        rows = scores[row_perm[t:t + v]]
        kept = sorted(range(scores.shape[1]), key=lambda c: (-rows[:, c].sum(), c))[:kt]
        total += np.sort(rows[:, kept], axis=1)[:, ::-1][:, :kt // m * n].sum()
    return total


def search_on_one_and_two_threads(w, cfg, stage, **options):
    """search_permutation on 1 and 2 threads: identical results and history, `stage` in the
    history, retained saliency non-decreasing through it. Returns the 1-thread result."""
    runs = []
    for threads in (1, 2):
        hinm.set_num_threads(threads)
        runs.append(hinm.search_permutation(w, cfg, **options))
    hinm.set_num_threads(0)
    a, b = runs
    np.testing.assert_array_equal(a.row_perm, b.row_perm)
    np.testing.assert_array_equal(a.col_orders, b.col_orders)
    assert [h[:2] for h in a.history] == [h[:2] for h in b.history]
    assert stage in [h[0] for h in a.history]
    retained = [h[1] for h in a.history]
    assert retained == sorted(retained)
    return a


def test_cluster_stage_raises_topk_objective_monotone_and_thread_independent(rng):
    # Rows drawn from 4 column profiles, shuffled: the clustering must regroup them.
    profiles = rng.random((4, 64)) ** 4
    w = profiles[rng.integers(0, 4, 128)] * (0.5 + rng.random((128, 64)))
    cfg = hinm.HiNMConfig(32, 0.5, 2, 4)
    only_cluster = dict(ocp_fail_limit=0, refine_rounds=0, swap_rounds=0, anneal_moves=0)
    a = search_on_one_and_two_threads(w, cfg, "cluster", seed=3, **only_cluster)
    before = ref_topk_objective(w, 32, 32, 2, 4, np.arange(128))
    after = ref_topk_objective(w, 32, 32, 2, 4, a.row_perm)
    assert after > before * 1.02
    off = hinm.search_permutation(w, cfg, seed=3, cluster_rounds=0, **only_cluster)
    np.testing.assert_array_equal(off.row_perm, np.arange(128))  # nothing else moves rows here
    assert a.retained > off.retained
    check_result(a, w, 32, 32, 2, 4)


def test_anneal_stage_raises_topk_objective_over_clustering_and_is_thread_independent(rng):
    # Skewed random rows in 8 tiles: the clustering stops where no row prefers another tile under
    # the current kept sets; the annealing (exact kept sets) must go further on the same objective.
    w = rng.random((256, 64)) ** 3
    cfg = hinm.HiNMConfig(32, 0.5, 2, 4)
    stages = dict(ocp_fail_limit=0, refine_rounds=0, swap_rounds=0)
    a = search_on_one_and_two_threads(w, cfg, "anneal", seed=5, anneal_moves=400, **stages)
    check_result(a, w, 32, 32, 2, 4)
    off = hinm.search_permutation(w, cfg, seed=5, anneal_moves=0, **stages)
    assert "anneal" not in [h[0] for h in off.history]
    clustered = ref_topk_objective(w, 32, 32, 2, 4, off.row_perm)
    annealed = ref_topk_objective(w, 32, 32, 2, 4, a.row_perm)
    assert annealed > clustered * 1.0005
    assert a.retained > off.retained
    # Too many tiles for the stage: it does not run.
    skip = hinm.search_permutation(w, cfg, seed=5, anneal_moves=400, anneal_max_tiles=4, **stages)
    np.testing.assert_array_equal(skip.row_perm, off.row_perm)


def brute_force_partition(scores, cfg):
    """Best retained saliency over every split of the rows into tiles (Kt = m: order is irrelevant)."""
    r, v = scores.shape[0], cfg.v
    best = -1.0
    for perm in itertools.permutations(range(r)):
        if all(perm[i] < perm[i + 1] for i in range(0, r, v)) and list(perm[::v]) == sorted(perm[::v]):
            best = max(best, hinm.permutation_retained(scores, cfg, np.array(perm)))
    return best


def test_row_swaps_reach_the_best_partition_of_tiny_cases():
    # 6 rows in 3 tiles of 2, K = 8, Kt = 4 = m: the ICP has nothing to do, so the retained saliency
    # is decided by the partition alone, which the row swaps must take to the brute-force optimum.
    cfg = hinm.HiNMConfig(2, 0.5, 2, 4)
    only_swaps = dict(ocp_fail_limit=0, cluster_rounds=0, refine_rounds=0, anneal_moves=0)
    improved = 0
    for seed in range(8):
        s = np.random.default_rng(seed).random((6, 8)) ** 3
        ident = hinm.search_permutation(s, cfg, method="identity").retained
        best = brute_force_partition(s, cfg)
        res = hinm.search_permutation(s, cfg, swap_rounds=10, **only_swaps)
        off = hinm.search_permutation(s, cfg, swap_rounds=0, **only_swaps)
        assert off.retained == pytest.approx(ident, rel=1e-12)
        assert res.retained == pytest.approx(best, rel=1e-12)
        retained = [h[1] for h in res.history]
        assert retained == sorted(retained) and retained[-1] >= ident
        if best > ident + 1e-9:
            improved += 1
            assert "row_swap" in [h[0] for h in res.history]
    assert improved >= 4  # the cases do exercise the swaps


def test_row_swaps_never_lower_retained_and_are_thread_independent(rng):
    w = rng.random((96, 64)) ** 3
    cfg = hinm.HiNMConfig(16, 0.5, 2, 4)
    runs = []
    for threads in (1, 2):
        hinm.set_num_threads(threads)
        runs.append(hinm.search_permutation(w, cfg, seed=2, ocp_fail_limit=0, cluster_rounds=0, anneal_moves=0,
                                            refine_rounds=0))
    hinm.set_num_threads(0)
    a, b = runs
    np.testing.assert_array_equal(a.row_perm, b.row_perm)
    np.testing.assert_array_equal(a.col_orders, b.col_orders)
    stages = [h[0] for h in a.history]
    assert "row_swap" in stages
    icp = a.history[stages.index("icp")][1]
    assert all(h[1] >= icp for h in a.history[stages.index("icp"):])
    assert a.retained > icp
    check_result(a, w, 16, 32, 2, 4)
    assert a.retained == pytest.approx(hinm.permutation_retained(w, cfg, a.row_perm, a.col_orders), rel=1e-12)


def test_apex_unit_matrix():
    np.random.seed(1)
    w = np.random.rand(128, 64)
    assert hinm.search_permutation(w, "2:4", method="identity").retained == pytest.approx(2852.377, abs=1e-3)
    assert hinm.search_permutation(w, "2:4", method="channel_swap").retained >= 2913.35
    assert hinm.search_permutation(w, "2:4", method="gyro").retained >= 2913.35


def test_time_budget_and_progress(rng):
    w = rng.random((512, 256))
    calls = []
    t0 = time.perf_counter()
    res = hinm.search_permutation(w, "hinm:v32:0.5:2:4", time_budget=0.0,
                                  progress=lambda stage, step, ret: calls.append((stage, ret)))
    assert time.perf_counter() - t0 < 5.0
    check_result(res, w, 32, 128, 2, 4)
    assert calls and calls[0][0] == "identity"
    res = hinm.search_permutation(w[:64, :32], "hinm:v32:0.5:2:4", progress=True)
    assert res.retained > 0


@needs_torch
def test_torch_weight_and_scores():
    import torch

    w = torch.randn(64, 32, dtype=torch.bfloat16)
    a = hinm.search_permutation(w, "hinm:v32:0.5:2:4", seed=2)
    b = hinm.search_permutation(w.float().numpy(), "hinm:v32:0.5:2:4", seed=2)
    np.testing.assert_array_equal(a.row_perm, b.row_perm)
    s = torch.rand(64, 32)
    c = hinm.search_permutation(w, "hinm:v32:0.5:2:4", scores=s)
    assert c.retained == pytest.approx(hinm.permutation_retained(s.numpy(), "hinm:v32:0.5:2:4", c.row_perm,
                                                                 c.col_orders), rel=1e-12)


def test_bad_inputs(rng):
    w = rng.random((64, 32))
    nan = w.copy()
    nan[3, 4] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        hinm.search_permutation(nan, "hinm:v32:0.5:2:4")
    with pytest.raises(ValueError, match="NaN"):
        hinm.search_permutation(w, "hinm:v32:0.5:2:4", scores=nan)
    with pytest.raises(ValueError, match="shape"):
        hinm.search_permutation(w, "hinm:v32:0.5:2:4", scores=w[:, :16])
    with pytest.raises(ValueError, match="anneal"):
        hinm.search_permutation(rng.random((8, 8)), "2:4", anneal_moves=-1)
    with pytest.raises(ValueError, match="anneal"):
        hinm.search_permutation(rng.random((8, 8)), "2:4", anneal_temperature=float("nan"))
    with pytest.raises(ValueError, match="method"):
        hinm.search_permutation(w, "hinm:v32:0.5:2:4", method="tetris")
    with pytest.raises(ValueError, match="fewer than m"):
        hinm.search_permutation(w[:, :3], "hinm:v32:0.5:2:4")
    with pytest.raises(ValueError, match="multiple of m"):
        hinm.search_permutation(w[:, :30], "2:4")
    with pytest.raises(ValueError, match="2-D"):
        hinm.search_permutation(w.reshape(2, 32, 32), "2:4")
    with pytest.raises(ValueError, match="time_budget"):
        hinm.search_permutation(w, "2:4", time_budget=-1)
    with pytest.raises(ValueError, match="schedule"):
        hinm.search_permutation(w, "hinm:v32:0.5:2:4", schedule=(8, 0))
    with pytest.raises(ValueError, match="cluster_rounds"):
        hinm.search_permutation(w, "hinm:v32:0.5:2:4", cluster_rounds=-1)
    with pytest.raises(ValueError, match="swap_rounds"):
        hinm.search_permutation(w, "hinm:v32:0.5:2:4", swap_rounds=-2)
    for name in ("ocp_fail_limit", "icp_fail_limit", "refine_rounds", "anneal_max_tiles"):
        with pytest.raises(ValueError, match=f"{name} must be an integer in"):
            hinm.search_permutation(w, "hinm:v32:0.5:2:4", **{name: -1})
    with pytest.raises(ValueError, match="icp_fail_limit must be an integer"):
        hinm.search_permutation(w, "hinm:v32:0.5:2:4", icp_fail_limit=2.5)
    for seed in (-1, 2**64, None, 1.5):  # -1 and 2**64 used to alias seeds 2**64 - 1 and 0
        with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 18446744073709551616\)"):
            hinm.search_permutation(w, "2:4", seed=seed)
        with pytest.raises(ValueError, match="seed must be an integer in"):
            hinm.permute.balanced_kmeans(rng.random((8, 2)), 2, seed=seed)
    with pytest.raises(ValueError, match="ocp_objective"):
        hinm.search_permutation(w, "hinm:v32:0.5:2:4", ocp_objective="both")
    with pytest.raises(TypeError):
        hinm.search_permutation(w, 3)
    with pytest.raises(AttributeError, match="single-tile"):
        _ = hinm.search_permutation(w, "hinm:v32:0.5:2:4").col_perm


@pytest.mark.parametrize("cfg", [hinm.HiNMConfig(32, 0.5, 2, 4), hinm.HiNMConfig(16, 0.25, 2, 4),
                                 hinm.NMConfig(2, 4)])
def test_result_feeds_hinm_mask_and_compress(rng, cfg):
    w = rng.standard_normal((100, 64)).astype(np.float32)
    scores = np.abs(w)
    res = hinm.search_permutation(w, cfg, seed=3)
    total = float(scores.sum(dtype=np.float64))
    if isinstance(cfg, hinm.HiNMConfig):
        mask = hinm.hinm_mask(scores, cfg, res.row_perm, res.col_orders)[0]
        assert hinm.retained_saliency(scores, mask) == pytest.approx(res.retained / total, rel=1e-12)
    dense = hinm.compress(w, cfg, perm=res).to_dense()
    np.testing.assert_array_equal(dense[dense != 0], w[dense != 0])
    assert float(np.abs(dense).sum(dtype=np.float64)) == pytest.approx(res.retained, rel=1e-12)
