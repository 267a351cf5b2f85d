"""Plans (masks under the HiNM contract), saliency, calibration statistics and layer-wise
reconstruction against slow references."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from hinm import HiNMConfig, NMConfig  # noqa: E402
from hinm._plan import Unstructured, compress_scores, is_legal, make_plan  # noqa: E402
from hinm.calibration import LayerStats, collect_stats  # noqa: E402
from hinm.reconstruct import reconstruct, relative_error  # noqa: E402
from hinm.saliency import saliency  # noqa: E402
from test_permute import ref_hinm_mask  # noqa: E402  (the one slow reference of the HiNM mask)


@pytest.mark.parametrize("r,k,v,dens,n,m", [(64, 48, 16, 0.5, 2, 4), (70, 40, 32, 0.25, 1, 4), (33, 24, 8, 1.0, 2, 8)])
def test_plan_matches_contract(r, k, v, dens, n, m):
    rng = np.random.default_rng(r)
    scores = rng.random((r, k))
    scores[:, :4] = 0.5  # ties
    cfg = HiNMConfig(v, dens, n, m)
    t = -(-r // v)
    row_perm = rng.permutation(r)
    col_orders = np.stack([rng.permutation(k) for _ in range(t)])
    plan = make_plan(torch.from_numpy(scores), cfg, torch.from_numpy(row_perm), torch.from_numpy(col_orders))
    expect = ref_hinm_mask(scores, v, cfg.kept_columns(k), n, m, row_perm, col_orders)
    np.testing.assert_array_equal(plan.mask.numpy(), expect)
    assert is_legal(plan, plan.mask)
    # the compression scores reproduce the very same mask under the contract
    again = make_plan(compress_scores(plan, plan.mask), cfg, torch.from_numpy(row_perm), torch.from_numpy(col_orders))
    assert torch.equal(again.mask, plan.mask)


def _stats(k, tokens=400, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(tokens, k, generator=g) @ torch.randn(k, k, generator=g) * 0.5 + torch.randn(k, generator=g)
    return x, LayerStats.from_inputs(x)


@pytest.mark.parametrize("config", [HiNMConfig(16, 0.5, 2, 4), NMConfig(2, 4), NMConfig(1, 4), Unstructured(0.75)])
@pytest.mark.parametrize("method", ["sparsegpt", "refit", "sparsegpt+refit"])
def test_reconstruction_never_worse_and_legal(config, method):
    torch.manual_seed(1)
    w = torch.randn(48, 32)
    x, st = _stats(32)
    plan = make_plan(saliency(w, "activation", st), config)
    rec = reconstruct(w, plan, st, method)
    assert rec.error_after <= rec.error_before + 1e-12
    assert is_legal(plan, rec.mask) and not (rec.weight[~rec.mask] != 0).any()
    # the reported errors are the true relative output errors on the calibration inputs
    dense_out = x.double() @ w.double().T
    true_err = float(((x.double() @ rec.weight.T - dense_out) ** 2).sum() / (dense_out ** 2).sum())
    assert true_err == pytest.approx(rec.error_after, rel=1e-6, abs=1e-9)
    if method != "sparsegpt" or not isinstance(config, Unstructured):
        assert rec.error_after < 0.9 * rec.error_before  # it does reconstruct, not only "not worse"


def test_sequential_target_uses_cross_term():
    torch.manual_seed(2)
    w = torch.randn(16, 24)
    xd = torch.randn(300, 24)
    xp = xd + 0.3 * torch.randn(300, 24)  # inputs after earlier layers were pruned
    st = LayerStats.from_inputs(xp, xd)
    plan = make_plan(w.abs(), NMConfig(2, 4))
    rec = reconstruct(w, plan, st, "refit")
    dense_out = xd.double() @ w.double().T
    true_err = float(((xp.double() @ rec.weight.T - dense_out) ** 2).sum() / (dense_out ** 2).sum())
    assert true_err == pytest.approx(relative_error(w, rec.weight, st), rel=1e-6)
    assert rec.error_after < rec.error_before


def test_obs_and_activation_saliency_reference():
    torch.manual_seed(3)
    w = torch.randn(5, 6)
    x = torch.randn(50, 6)
    st = LayerStats.from_inputs(x)
    norms = x.double().norm(dim=0)
    assert torch.allclose(saliency(w, "activation", st), w.double().abs() * norms)
    h = x.double().T @ x.double()
    h += 0.01 * h.diagonal().mean() * torch.eye(6, dtype=torch.float64)
    assert torch.allclose(saliency(w, "obs", st), w.double().abs() / torch.linalg.inv(h).diagonal().sqrt())
    with pytest.raises(ValueError, match="calibration"):
        saliency(w, "obs", None)
    with pytest.raises(ValueError, match="saliency must be"):
        saliency(w, "bogus", st)


@pytest.mark.parametrize("bad,match", [
    (torch.randn(10, 5), "width 6"),
    (torch.full((10, 6), float("nan")), "NaN"),
    (torch.randn(0, 6), "empty"),
    (torch.ones(4, 6, dtype=torch.int64), "floating"),
])
def test_bad_calibration_inputs_raise(bad, match):
    with pytest.raises(ValueError, match=match):
        _collect_on_linear(bad)


def _collect_on_linear(batch):
    model = torch.nn.Sequential(torch.nn.Linear(6, 3))
    return collect_stats(model, {"0": model[0]}, [batch])


def test_empty_calibration_raises():
    model = torch.nn.Sequential(torch.nn.Linear(6, 3))
    with pytest.raises(ValueError, match="empty"):
        collect_stats(model, {"0": model[0]}, [])


def test_collect_stats_matches_gram():
    torch.manual_seed(4)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    xs = [torch.randn(7, 6), torch.randn(5, 6)]
    stats = collect_stats(model, {"0": model[0], "2": model[2]}, xs)
    x = torch.cat(xs).double()
    assert stats["0"].tokens == 12
    assert torch.allclose(stats["0"].hessian, x.T @ x, rtol=1e-5, atol=1e-5)
    h = torch.relu(model[0](torch.cat(xs))).double()
    assert torch.allclose(stats["2"].hessian, h.T @ h, rtol=1e-5, atol=1e-5)
