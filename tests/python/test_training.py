"""Training recipes against hand computation: effective weight and gradient of a step, β values,
structure frames, the SR-STE update, bit-exact resume, finalize, bad configs. Budget: ~10 s."""

import io
import math

import numpy as np
import pytest

import hinm

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import hinm.training as T  # noqa: E402


# ---- slow references ---------------------------------------------------------------------
def ref_nm_mask(scores, n, m):
    g = scores.reshape(-1, m)
    order = np.argsort(-g, axis=1, kind="stable")[:, :n]
    mask = np.zeros(g.shape, bool)
    np.put_along_axis(mask, order, True, axis=1)
    return mask.reshape(scores.shape)


def ref_hinm_mask(scores, cfg):
    r, k = scores.shape
    kt = cfg.kept_columns(k)
    mask = np.zeros((r, k), bool)
    for t0 in range(0, r, cfg.v):
        rows = scores[t0:t0 + cfg.v]
        col_sum = rows.astype(np.float64).sum(axis=0)
        kept = np.sort(np.argsort(-col_sum, kind="stable")[:kt])
        inner = ref_nm_mask(rows[:, kept], cfg.n, cfg.m)
        for j, c in enumerate(kept):
            mask[t0:t0 + cfg.v, c] = inner[:, j]
    return mask


def ref_mask(weight, cfg):
    """Mask of a Linear [O, K] or conv [O, C, kh, kw] weight (conv grouped along C, NHWC)."""
    w = weight.detach().double().numpy()
    mat = w if w.ndim == 2 else np.moveaxis(w, 1, -1).reshape(w.shape[0], -1)
    scores = np.abs(mat).astype(np.float32)
    m = ref_hinm_mask(scores, cfg) if isinstance(cfg, hinm.HiNMConfig) else ref_nm_mask(scores, cfg.n, cfg.m)
    if w.ndim > 2:
        o, c, *kernel = w.shape
        m = np.moveaxis(m.reshape(o, *kernel, c), -1, 1)
    return torch.from_numpy(m)


def dyadic(gen, *shape, scale=8):
    """Random float64 values k/scale with small integers k: sums and products stay exact."""
    return torch.randint(-16, 17, shape, generator=gen).double() / scale


def mlp(gen, k=16, hidden=8, out=4):
    model = nn.Sequential(nn.Linear(k, hidden), nn.ReLU(), nn.Linear(hidden, out)).double()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(dyadic(gen, *p.shape))
    return model


def original(layer):
    return layer.parametrizations.weight.original


# ---- schedules ---------------------------------------------------------------------------
def test_beta_values():
    assert [T.beta("linear", 0.25, t) for t in (0, 1, 2, 4, 9)] == [1.0, 0.75, 0.5, 0.0, 0.0]
    assert T.beta("exp", 2e-4, 0) == 1.0
    assert T.beta("exp", 1e-4, 6931) == pytest.approx(0.5, rel=1e-4)   # half-life ln2/α
    assert T.beta("exp", 0.3, 7) == math.exp(-2.1)
    assert T.beta("step", 2e-4, 0) == 0.0 and T.beta("step", 0.5, 100) == 0.0
    assert T.beta("linear", 2e-4, 5000) == 0.0 and T.beta("linear", 2e-4, 4999) > 0


def test_structure_patterns_and_frames():
    names = lambda ps: [str(p) for p in ps]  # noqa: E731
    assert names(T.structure_patterns(hinm.NMConfig(1, 8), "stepwise")) == ["7:8", "4:8", "2:8", "1:8"]
    assert names(T.structure_patterns(hinm.NMConfig(1, 16), "stepwise")) == ["15:16", "8:16", "4:16", "2:16", "1:16"]
    assert names(T.structure_patterns(hinm.NMConfig(2, 4), "stepwise")) == ["3:4", "2:4"]
    assert names(T.structure_patterns(hinm.NMConfig(1, 8), "geometric")) == ["8:64", "4:32", "2:16", "1:8"]
    assert names(T.structure_patterns(hinm.NMConfig(2, 4), "geometric")) == ["16:32", "8:16", "4:8", "2:4"]
    assert [s for s, _ in T.structure_frames(hinm.NMConfig(1, 8), "stepwise", 0, 300)] == [0, 75, 150, 225]
    assert [s for s, _ in T.structure_frames(hinm.NMConfig(1, 16), "stepwise", 0, 300)] == [0, 60, 120, 180, 240]
    assert [s for s, _ in T.structure_frames(hinm.NMConfig(1, 4), "stepwise", 10, 100)] == [10, 43, 76]
    h = hinm.HiNMConfig(v=8, vec_density=0.5, n=1, m=4)
    assert T.structure_patterns(h, "stepwise") == [hinm.HiNMConfig(8, 0.5, 3, 4), hinm.HiNMConfig(8, 0.5, 2, 4), h]


def test_recipe_phases_at_frame_boundaries():
    gen = torch.Generator().manual_seed(0)
    model = mlp(gen, k=16, hidden=8)
    rec = T.StructureDecay(model, "1:4", total_steps=20, dense_steps=2, finetune_steps=3)   # frames at 2, 7, 12
    seen = []
    for _ in range(22):
        seen.append((rec.steps_done, None if rec.pattern is None else str(rec.pattern), rec.beta))
        rec.step()
    by_step = {g: (p, b) for g, p, b in seen}
    assert by_step[0] == by_step[1] == (None, 1.0)
    assert by_step[2] == by_step[6] == ("3:4", 0.0)
    assert by_step[7] == by_step[11] == ("2:4", 0.0)
    assert by_step[12] == by_step[16] == ("1:4", 0.0)
    assert by_step[17] == by_step[21] == ("1:4", 0.0)


def test_mask_decay_time_counts_from_first_sparse_step_and_finetune_is_hard():
    gen = torch.Generator().manual_seed(0)
    rec = T.MaskDecay(mlp(gen), "2:4", schedule="exp", decay=0.1, dense_steps=3, finetune_steps=2, total_steps=10)
    betas = []
    for _ in range(11):
        betas.append(rec.beta)
        rec.step()
    assert betas[:3] == [1.0] * 3 and rec.masks["0.weight"] is not None
    assert betas[3:8] == [math.exp(-0.1 * t) for t in range(5)]
    assert betas[8:] == [0.0] * 3


# ---- one step, by hand -------------------------------------------------------------------
@pytest.mark.parametrize("via_optimizer", [False, True])
@pytest.mark.parametrize("recipe", ["linear", "exp", "structure", "srste"])
@pytest.mark.parametrize("cfg", ["2:4", "hinm:v4:0.5:2:4"])
def test_effective_weight_and_gradient_of_a_step(recipe, cfg, via_optimizer):
    gen = torch.Generator().manual_seed(7)
    model = nn.Sequential(nn.Linear(16, 8)).double()
    with torch.no_grad():
        model[0].weight.copy_(dyadic(gen, 8, 16))
        model[0].bias.copy_(dyadic(gen, 8))
    lr, lam = 0.25, 0.125
    opt = torch.optim.SGD(model.parameters(), lr=0.0)   # lr 0 while advancing to the checked step
    target = opt if via_optimizer else model
    config = hinm.parse_config(cfg)
    if recipe == "linear":
        rec, t, beta = T.MaskDecay(target, cfg, schedule="linear", decay=0.25, dense_steps=1), 2, 0.5
    elif recipe == "exp":
        rec, t, beta = T.MaskDecay(target, cfg, schedule="exp", decay=0.3, dense_steps=1), 2, math.exp(-0.6)
    elif recipe == "structure":
        rec, t, beta = T.StructureDecay(target, cfg, total_steps=5, dense_steps=1), 1, 0.0
        config = hinm.parse_config(cfg.replace("2:4", "3:4"))     # frames: 3:4 at steps 1-2, 2:4 at 3-4
    else:
        rec, t, beta = T.SRSTE(target, cfg, lambda_w=lam, dense_steps=1), 2, 0.0
    for _ in range(1 + t):
        model(torch.zeros(1, 16, dtype=torch.float64)).sum().backward()
        opt.step()
        opt.zero_grad()
        if not via_optimizer:
            rec.step()
    w0 = (rec._targets[0].dense if via_optimizer else original(model[0])).detach().clone()
    b0 = model[0].bias.detach().clone()
    m = ref_mask(w0, config).double()
    w_eff = w0 * (m + (1 - m) * beta)
    assert torch.equal(rec.masks["param0" if via_optimizer else "0.weight"].double(), m)

    x, c = dyadic(gen, 3, 16), dyadic(gen, 3, 8)
    out = model(x)
    assert torch.equal(out, x @ w_eff.T + b0)                   # bias kept
    (out * c).sum().backward()
    grad = c.T @ x                                                # straight-through: dL/dW_eff
    if recipe == "srste":
        grad = grad + lam * (1 - m) * w0
    if not via_optimizer:
        assert torch.equal(original(model[0]).grad, grad)
    for group in opt.param_groups:
        group["lr"] = lr
    opt.step()
    if not via_optimizer:
        rec.step()
    w1 = (rec._targets[0].dense if via_optimizer else original(model[0])).detach()
    assert torch.equal(w1, w0 - lr * grad)                       # the optimizer updated the dense W
    assert torch.equal(model[0].bias.detach(), b0 - lr * c.sum(0))


def test_srste_update_equals_formula_default_lambda():
    gen = torch.Generator().manual_seed(3)
    layer = nn.Linear(32, 16).double()
    model = nn.Sequential(layer)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    rec = T.SRSTE(model, "1:4")
    w0 = original(layer).detach().clone()
    m = ref_mask(w0, hinm.NMConfig(1, 4)).double()
    x = torch.randn(5, 32, generator=gen, dtype=torch.float64)
    loss = model(x).square().sum()
    loss.backward()
    y = x @ (w0 * m).T + layer.bias.detach()
    g = (2 * y).T @ x
    opt.step()
    rec.step()
    expect = w0 - 0.1 * (g + 2e-4 * (1 - m) * w0)
    torch.testing.assert_close(original(layer).detach(), expect, rtol=1e-13, atol=1e-15)


def test_conv_masks_group_along_input_channels():
    gen = torch.Generator().manual_seed(1)
    conv = nn.Conv2d(8, 6, 3)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen))
    w0 = conv.weight.detach().clone()
    rec = T.MaskDecay(nn.Sequential(conv), "2:4", schedule="step")
    m = ref_mask(w0, hinm.NMConfig(2, 4))
    assert torch.equal(rec.masks["0.weight"], m)
    assert torch.equal(m.sum(1), torch.full((6, 3, 3), 4))        # 2 of every 4 input channels
    x = torch.randn(2, 8, 5, 5, generator=gen)
    assert torch.equal(conv(x), nn.functional.conv2d(x, w0 * m, conv.bias))
    hard = rec.finalize()["0.weight"]
    mat = T.weight_matrix(hard)
    assert torch.equal(hinm.compress_nm(mat, 2, 4).to_dense(), mat)
    assert torch.equal(rec.compressed()["0.weight"].to_dense(), T.weight_matrix(hard))


def test_hinm_mask_matches_reference():
    gen = torch.Generator().manual_seed(5)
    for cfg, shape in [(hinm.HiNMConfig(4, 0.5, 2, 4), (10, 24)), (hinm.HiNMConfig(8, 0.25, 1, 4), (16, 33)),
                       (hinm.HiNMConfig(3, 0.75, 1, 2), (7, 12))]:
        w = torch.randn(shape, generator=gen)
        w[0, :4] = 1.0   # ties
        assert torch.equal(T.layer_mask(w, cfg)[0], ref_mask(w, cfg))


# ---- finalize ------------------------------------------------------------------------------
@pytest.mark.parametrize("via_optimizer", [False, True])
def test_finalize_hard_masks_keeps_bias_and_parameters(via_optimizer):
    gen = torch.Generator().manual_seed(2)
    model = mlp(gen, k=16, hidden=8, out=4)
    params = list(model.parameters())
    biases = [model[0].bias.detach().clone(), model[2].bias.detach().clone()]
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    rec = T.MaskDecay(opt if via_optimizer else model, "1:4", schedule="exp", decay=0.5)
    for _ in range(3):
        model(dyadic(gen, 4, 16)).square().mean().backward()
        opt.step()
        opt.zero_grad()
        if not via_optimizer:
            rec.step()
    dense = [t.dense.detach().clone() for t in rec._targets]
    masks = [rec._masks[0], rec._masks[1]]
    hard = rec.finalize()
    assert {id(p) for p in model.parameters()} == {id(p) for p in params}   # the optimizer's objects
    names = ["param0", "param2"] if via_optimizer else ["0.weight", "2.weight"]
    assert list(hard) == names
    for (name, w), d, mk, layer in zip(hard.items(), dense, masks, (model[0], model[2])):
        assert torch.equal(w, torch.where(mk, d, torch.zeros_like(d)))
        assert torch.equal(layer.weight.detach(), w) and isinstance(layer.weight, nn.Parameter)
        assert torch.equal(hinm.compress_nm(w.float(), 1, 4).to_dense(), w.float())
    assert all(not torch.equal(b, layer.bias.detach()) for b, layer in zip(biases, (model[0], model[2])))  # trained
    x = dyadic(gen, 2, 16)
    h = torch.relu(x @ hard[names[0]].T + model[0].bias)
    assert torch.equal(model(x), h @ hard[names[1]].T + model[2].bias)
    with pytest.raises(RuntimeError, match="finalized"):
        rec.finalize()


# ---- resume ------------------------------------------------------------------------------
def _train(model, opt, rec, gen, steps, via_optimizer):
    for _ in range(steps):
        x = torch.randn(8, 16, generator=gen)
        loss = nn.functional.cross_entropy(model(x), torch.randint(0, 4, (8,), generator=gen))
        loss.backward()
        opt.step()
        opt.zero_grad()
        if not via_optimizer:
            rec.step()


RECIPES = {
    "maskdecay": lambda tgt: T.MaskDecay(tgt, "2:8", schedule="exp", decay=0.2, dense_steps=2, finetune_steps=3,
                                         mask_every=3, total_steps=12),
    "structure": lambda tgt: T.StructureDecay(tgt, "1:8", total_steps=12, schedule="linear", decay=0.1,
                                              finetune_steps=2),
    "srste": lambda tgt: T.SRSTE(tgt, "hinm:v4:0.5:2:4", lambda_w=1e-2, mask_every=2),
}


@pytest.mark.parametrize("via_optimizer", [False, True])
@pytest.mark.parametrize("name", sorted(RECIPES))
def test_resume_is_bit_exact(name, via_optimizer):
    def fresh():
        torch.manual_seed(11)
        model = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4))
        opt = torch.optim.Adam(model.parameters(), lr=5e-2, weight_decay=1e-3)
        return model, opt, RECIPES[name](opt if via_optimizer else model)

    model, opt, rec = fresh()
    _train(model, opt, rec, torch.Generator().manual_seed(1), 14, via_optimizer)
    straight = rec.finalize()

    model, opt, rec = fresh()
    gen = torch.Generator().manual_seed(1)
    _train(model, opt, rec, gen, 7, via_optimizer)
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "rec": rec.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf)
    model, opt, rec = fresh()
    model.load_state_dict(saved["model"])
    opt.load_state_dict(saved["opt"])
    rec.load_state_dict(saved["rec"])
    _train(model, opt, rec, gen, 7, via_optimizer)
    resumed = rec.finalize()
    assert list(straight) == list(resumed)
    for k in straight:
        assert torch.equal(straight[k], resumed[k]), k


# ---- bad input ---------------------------------------------------------------------------
def test_bad_configs_raise():
    gen = torch.Generator().manual_seed(0)
    model = mlp(gen, k=16, hidden=8)
    with pytest.raises(ValueError, match="schedule"):
        T.MaskDecay(model, "2:4", schedule="cosine")
    with pytest.raises(ValueError, match="decay"):
        T.MaskDecay(model, "2:4", decay=-1.0)
    with pytest.raises(ValueError, match="total_steps is required"):
        T.MaskDecay(model, "2:4", finetune_steps=5)
    with pytest.raises(ValueError, match="total_steps"):
        T.MaskDecay(model, "2:4", dense_steps=5, finetune_steps=5, total_steps=10)
    with pytest.raises(ValueError, match="power of two"):
        T.StructureDecay(model, "3:8", total_steps=100)
    with pytest.raises(ValueError, match="geometric"):
        T.StructureDecay(model, "1:64", total_steps=100, structure="geometric")
    with pytest.raises(ValueError, match="frames"):
        T.StructureDecay(model, "1:8", total_steps=3)
    with pytest.raises(ValueError, match="structure must be"):
        T.MaskDecay(model, "2:4", total_steps=10, structure="random")
    with pytest.raises(ValueError, match="mask_every"):
        T.MaskDecay(model, "2:4", mask_every=0)
    with pytest.raises(ValueError, match="lambda_w"):
        T.SRSTE(model, "2:4", lambda_w=-1e-4)
    with pytest.raises(ValueError, match="2.weight: input width 8 is not a multiple of m=16"):
        T.SRSTE(model, "1:16")
    with pytest.raises(ValueError, match="fewer than m"):
        T.SRSTE(model, "hinm:v4:0.25:2:8")
    with pytest.raises(ValueError, match="not found"):
        T.SRSTE(model, "2:4", layers=["fc9"])
    with pytest.raises(TypeError, match="bare parameter list"):
        T.SRSTE(list(model.parameters()), "2:4")
    with pytest.raises(ValueError, match="n < m"):
        T.SRSTE(model, "4:4")
    assert not any(hasattr(layer, "parametrizations") for layer in model)   # nothing half-attached
    rec = T.SRSTE(model, "2:4", layers=["0"])
    with pytest.raises(ValueError, match="already parametrized"):
        T.MaskDecay(model, "2:4")
    other = T.MaskDecay(mlp(gen), "2:4")
    with pytest.raises(ValueError, match="other settings"):
        other.load_state_dict(rec.state_dict())
    opt = torch.optim.SGD(mlp(gen).parameters(), lr=0.1)
    with pytest.raises(ValueError, match="belong to the optimizer"):
        T.SRSTE(opt, "2:4", params=[torch.zeros(4, 4)])
    with pytest.raises(RuntimeError, match="advances on its own"):
        T.SRSTE(opt, "2:4").step()
    rec.finalize()
    with pytest.raises(RuntimeError, match="finalized"):
        rec.step()


def test_masks_recomputed_only_every_k_steps():
    gen = torch.Generator().manual_seed(4)
    model = mlp(gen)
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    rec = T.MaskDecay(model, "2:4", schedule="exp", decay=0.1, dense_steps=1, mask_every=3)
    previous, changed_between = None, 0
    for g in range(1, 11):
        model(dyadic(gen, 4, 16)).square().mean().backward()
        opt.step()
        opt.zero_grad()
        rec.step()
        mask, fresh = rec.masks["0.weight"], ref_mask(original(model[0]), hinm.NMConfig(2, 4))
        if (g - 1) % 3 == 0:
            assert torch.equal(mask, fresh), g
        else:
            assert torch.equal(mask, previous), g
            changed_between += not torch.equal(mask, fresh)
        previous = mask
    assert changed_between > 0   # the weights did move the would-be mask in between


@pytest.mark.parametrize("cfg", ["hinm:v4:0.5:2:4", "hinm:v3:0.25:1:4"])
def test_finalized_hinm_weights_compress_exactly(cfg):
    gen = torch.Generator().manual_seed(9)
    model = nn.Sequential(nn.Linear(32, 10), nn.ReLU(), nn.Conv1d(4, 6, 8))   # 10 rows: a padded last tile
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    rec = T.MaskDecay(model, cfg, schedule="linear", decay=0.5, layers=["0", "2"])
    for _ in range(3):
        (model[0](torch.randn(2, 32, generator=gen)).sum() + model[2](torch.randn(2, 4, 9, generator=gen)).sum()
         ).backward()
        opt.step()
        opt.zero_grad()
        rec.step()
    assert rec.beta == 0.0
    masks = {k: v.clone() for k, v in rec.masks.items()}
    config = hinm.parse_config(cfg)
    with pytest.raises(RuntimeError, match="finalize"):
        rec.compressed()
    hard = rec.finalize()
    compressed = rec.compressed()
    assert all(isinstance(c, hinm.HiNMTensor) for c in compressed.values())
    for name, w in hard.items():
        mat = T.weight_matrix(w)
        assert torch.equal(mat != 0, T.weight_matrix(masks[name]))      # no exact zeros in these weights
        assert (mat != 0).sum(1).tolist() == [config.kept_columns(mat.shape[1]) * config.n // config.m] * len(mat)
        assert torch.equal(compressed[name].to_dense(), mat)


def test_corrupt_state_dicts_raise():
    gen = torch.Generator().manual_seed(0)
    opt = torch.optim.SGD(mlp(gen).parameters(), lr=0.1)
    rec = T.SRSTE(opt, "hinm:v4:0.5:2:4")
    good = rec.state_dict()
    for field, key, bad in [("masks", "param0", torch.zeros(3, 3, dtype=torch.bool)),
                            ("kept", "param0", torch.zeros(2, 8, dtype=torch.int64)),
                            ("dense", "param0", None)]:
        state = {**good, field: {**good[field], key: bad}}
        if bad is None:
            del state[field][key]
        with pytest.raises(ValueError, match=field):
            rec.load_state_dict(state)
    with pytest.raises(ValueError, match="version"):
        rec.load_state_dict({"version": 99})
    with pytest.raises(ValueError, match="bad step"):
        rec.load_state_dict({**good, "step": -1})
