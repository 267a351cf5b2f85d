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


def test_warm_start_only_makes_layers_cheaper():
    model, tight = run(0.999)
    loose = hinm.tasder(model, data(1), quality_fn_for(model, data(2)), target=0.95, menu=MENU, progress=False,
                        start=tight)
    assert loose.macs <= tight.macs
    for name, lp in tight.layers.items():
        assert loose.layers[name].density <= lp.density
    with pytest.raises(ValueError, match="floor"):
        hinm.tasder(model, data(1), quality_fn_for(model, data(2)), target=1.0, menu=MENU, progress=False,
                    start=loose)
