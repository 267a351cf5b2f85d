"""TASDER on a tiny synthetic torch model: meets its target, saves MACs, is deterministic, and its
plan round-trips through JSON and applies with the kernels and in simulation alike."""

import numpy as np
import pytest

import hinm

torch = pytest.importorskip("torch")


def tiny_model():
    g = torch.Generator().manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.GELU(), torch.nn.Linear(64, 64), torch.nn.GELU(),
                                torch.nn.Linear(64, 16))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return model.eval()


def data(seed, rows=48):
    return torch.randn(rows, 32, generator=torch.Generator().manual_seed(seed))


def quality_fn_for(model, x):
    with torch.no_grad():
        ref = model(x)

    def quality(m):
        with torch.no_grad():
            return float(torch.nn.functional.cosine_similarity(m(x), ref, dim=1).mean())

    return quality


MENU = {"weight": ["3:4", "2:4+1:8", "2:4", "1:4"], "activation": ["3:4", "2:4+1:8", "2:4"]}


def run(target):
    model = tiny_model()
    return model, hinm.tasder(model, data(1), quality_fn_for(model, data(2)), target=target, menu=MENU,
                              progress=False)


def test_tasder_meets_target_saves_macs_and_is_deterministic():
    model, plan = run(0.98)
    before = [p.clone() for p in model.parameters()]
    assert plan.mac_reduction > 0.2
    assert plan.quality >= 0.98 * plan.dense_quality
    assert any(lp.kind != "dense" for lp in plan.layers.values())
    assert plan.dense_macs == 48 * (32 * 64 + 64 * 64 + 64 * 16)
    # The search leaves the model as it was.
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    _, again = run(0.98)
    assert again.to_json() == plan.to_json()
    # Re-measured on the applied model, the plan still meets its target.
    quality = quality_fn_for(tiny_model(), data(2))
    assert quality(plan.apply(tiny_model(), mode="simulate")) == pytest.approx(plan.quality, abs=1e-6)
    assert quality(plan.apply(tiny_model(), mode="kernel")) == pytest.approx(plan.quality, abs=1e-4)


def test_tighter_target_costs_more():
    _, loose = run(0.95)
    _, tight = run(0.999)
    assert tight.macs >= loose.macs
    assert tight.quality >= 0.999 * tight.dense_quality


def test_plan_json_round_trip_and_bad_plans():
    _, plan = run(0.98)
    back = hinm.TASDERPlan.from_json(plan.to_json())
    assert back.layers == plan.layers and back.macs == plan.macs
    with pytest.raises(ValueError, match="version"):
        hinm.TASDERPlan.from_json('{"version": 99}')
    with pytest.raises(ValueError, match="kind"):
        hinm.LayerPlan("sideways", "2:4")
    with pytest.raises(ValueError):
        hinm.LayerPlan("weight", "2:4+")
    bad = hinm.TASDERPlan({"nope": hinm.LayerPlan("weight", "2:4", 0.0, 1)})
    with pytest.raises(ValueError, match="nope"):
        bad.apply(tiny_model())


def test_bad_arguments_raise():
    model = tiny_model()
    q = quality_fn_for(model, data(2))
    with pytest.raises(ValueError, match="target"):
        hinm.tasder(model, data(1), q, target=1.5, progress=False)
    with pytest.raises(ValueError, match="menu"):
        hinm.tasder(model, data(1), q, menu={"bias": ["2:4"]}, progress=False)
    with pytest.raises(ValueError):
        hinm.tasder(model, data(1), q, menu={"weight": ["2:4+"]}, progress=False)
    with pytest.raises(ValueError, match="no nn.Linear"):
        hinm.tasder(model, data(1), q, layers=lambda n: False, progress=False)


def test_uniform_plan_counts_every_layer():
    model = tiny_model()
    plan = hinm.uniform_plan(model, data(1), "weight", "2:4")
    assert plan.mac_reduction == pytest.approx(0.5)
    assert np.isclose(hinm.uniform_plan(model, data(1), "activation", "2:4+1:8").mac_reduction, 0.375)


def test_warm_start_never_costs_more_than_the_start():
    model, tight = run(0.999)
    loose = hinm.tasder(model, data(1), quality_fn_for(model, data(2)), target=0.95, menu=MENU, progress=False,
                        start=tight)
    assert loose.macs <= tight.macs
    assert loose.quality >= 0.95 * loose.dense_quality
    with pytest.raises(ValueError, match="floor"):
        hinm.tasder(model, data(1), quality_fn_for(model, data(2)), target=1.0, menu=MENU, progress=False,
                    start=loose)
    stranger = hinm.TASDERPlan({"9": hinm.LayerPlan("weight", "2:4", 0.0, 1)})
    with pytest.raises(ValueError, match="'9'"):
        hinm.tasder(model, data(1), quality_fn_for(model, data(2)), target=0.95, menu=MENU, progress=False,
                    start=stranger)


# --- the richer menu, the uniform guarantee and the search's order ---------------------------------

M16_MENU = {"weight": ["15:16", "7:8", "14:16", "3:4+1:16", "12:16", "2:4+1:8", "2:4"],
            "activation": ["7:8+1:16", "14:16", "12:16", "10:16", "2:4"]}


def brute_force_uniform(model, menu, quality, floor):
    """The cheapest uniform plan over the menu that meets floor, by trying every entry."""
    best = None
    for kind, entries in menu.items():
        for series in entries:
            plan = hinm.uniform_plan(model, data(1), kind, series)
            undo = plan.simulate(model)
            try:
                q = quality(model)
            finally:
                undo()
            if q >= floor and (best is None or plan.macs < best.macs):
                best = plan
    return best


def test_menu_is_parsed_canonical_and_checked():
    from hinm.tasder import DEFAULT_MENU, _normalise_menu

    assert _normalise_menu({"weight": [" 2:4 + 1:8", "2:4+1:8", "12:16"]}) == {"weight": ("2:4+1:8", "12:16")}
    for kind in ("weight", "activation"):
        ms = {c.m for s in DEFAULT_MENU[kind] for c in hinm.parse_series(s)}
        assert {4, 8, 16} <= ms
        assert any("+" in s for s in DEFAULT_MENU[kind]) and "12:16" in DEFAULT_MENU[kind]
        assert all(0.5 <= hinm.series_density(s) < 1 for s in DEFAULT_MENU[kind])
    with pytest.raises(ValueError, match="list"):
        _normalise_menu({"weight": "2:4"})
    with pytest.raises(ValueError, match="no series"):
        _normalise_menu({"weight": [], "activation": []})
    with pytest.raises(ValueError, match="term 1"):
        _normalise_menu({"activation": ["2:4+5:4"]})


@pytest.mark.parametrize("target", [0.999, 0.99, 0.97])
def test_plan_meets_calibration_target_and_beats_every_uniform_plan(target):
    model = tiny_model()
    quality = quality_fn_for(model, data(2))
    plan = hinm.tasder(model, data(1), quality, target=target, menu=M16_MENU, progress=False)
    floor = target * plan.dense_quality
    assert plan.quality >= floor
    assert quality(plan.apply(tiny_model(), mode="simulate")) >= floor
    best = brute_force_uniform(model, M16_MENU, quality, floor)
    if best is not None:
        assert plan.macs <= best.macs
        assert plan.uniform["mac_reduction"] == pytest.approx(best.mac_reduction)


def test_uniform_fallback_when_per_layer_steps_all_fail():
    """A quality that only accepts plans touching every layer (or none): no per-layer step can pass,
    so the search must return the cheapest uniform plan."""
    model = tiny_model()
    original = {n: m.weight.detach().clone() for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}

    def all_or_nothing(m):
        touched = [not torch.equal(mod.weight, original[n]) or bool(mod._forward_pre_hooks)
                   for n, mod in m.named_modules() if n in original]
        return 1.0 if all(touched) or not any(touched) else 0.0

    plan = hinm.tasder(model, data(1), all_or_nothing, target=0.9, menu=M16_MENU, progress=False)
    u = plan.uniform
    assert (u["series"], u["quality"], u["mac_reduction"]) == ("2:4", 1.0, pytest.approx(0.5))
    assert plan.mac_reduction == pytest.approx(0.5)
    assert {(lp.kind, lp.series) for lp in plan.layers.values()} == {(u["kind"], "2:4")}


def test_search_is_shared_across_targets_and_deterministic():
    model = tiny_model()
    quality = quality_fn_for(model, data(2))
    search = hinm.TASDERSearch(model, data(1), quality, menu=M16_MENU, progress=False)
    tight = search.search(0.995)
    evaluations = search.evaluator.evaluations
    loose = search.search(0.98, start=tight)
    assert loose.macs <= tight.macs
    assert search.evaluator.evaluations >= evaluations  # remembered qualities are not re-measured
    again = hinm.TASDERSearch(model, data(1), quality, menu=M16_MENU, progress=False).search(0.995)
    assert again.to_json() == tight.to_json()
    # Every layer's steps go to cheaper options at a non-increasing saving per unit of loss.
    for name in search.linears:
        steps = [mv for mv in search.moves() if mv.layer == name]
        assert [mv.option.density for mv in steps] == sorted({mv.option.density for mv in steps}, reverse=True)
        assert all(a.ratio >= b.ratio for a, b in zip(steps, steps[1:]))
    rows = tight.describe()
    assert [r["layer"] for r in rows] == list(search.linears)
    assert sum(r["mac_share"] for r in rows) == pytest.approx(1.0)


def test_search_bad_arguments_raise():
    model = tiny_model()
    q = quality_fn_for(model, data(2))
    with pytest.raises(ValueError, match="activation_threshold"):
        hinm.TASDERSearch(model, data(1), q, activation_threshold=-1.0, progress=False)
    with pytest.raises(ValueError, match="sample_rows"):
        hinm.TASDERSearch(model, data(1), q, sample_rows=0, progress=False)
    with pytest.raises(ValueError, match="max_refine"):
        hinm.TASDERSearch(model, data(1), q, max_refine=-1, progress=False)
    search = hinm.TASDERSearch(model, data(1), q, menu={"weight": ["2:4"]}, progress=False)
    with pytest.raises(ValueError, match="target"):
        search.search(0.0)
    with pytest.raises(ValueError, match="menu"):
        search.uniform_quality("activation", "2:4")
