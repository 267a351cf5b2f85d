"""HiNMLinear against the dense masked linear; state-dict and safetensors round trips; corrupted,
truncated and mismatched checkpoints."""

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

import hinm  # noqa: E402
from hinm.nn import HiNMLinear  # noqa: E402

CONFIGS = ["hinm:v16:0.5:2:4", "hinm:v8:0.25:1:4", "2:4", "1:2"]


def _linear(out_f=40, in_f=32, seed=0, bias=True):
    torch.manual_seed(seed)
    return torch.nn.Linear(in_f, out_f, bias=bias)


@pytest.mark.parametrize("config", CONFIGS)
def test_forward_matches_dense_masked(config):
    lin = _linear(bias=config != "1:2")
    mod = HiNMLinear.from_dense(lin, config)
    w = mod.to_dense()
    expect = hinm.compress(lin.weight.detach(), config).to_dense()
    assert torch.equal(w, expect)
    x = torch.randn(3, 5, 32)
    with torch.no_grad():
        y = mod(x)
        ref = torch.nn.functional.linear(x, w, lin.bias)
    assert y.shape == (3, 5, 40)
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)


def test_permutation_and_scores_are_used():
    lin = _linear()
    g = torch.Generator().manual_seed(3)
    perm = {"row_perm": torch.randperm(40, generator=g), "col_orders": torch.stack([torch.randperm(32, generator=g) for _ in range(3)])}
    scores = torch.rand(40, 32, generator=g)
    mod = HiNMLinear.from_dense(lin, "hinm:v16:0.5:2:4", perm=perm, scores=scores)
    mask, _ = hinm.hinm_mask(scores, "hinm:v16:0.5:2:4", perm["row_perm"], perm["col_orders"])
    assert torch.equal(mod.to_dense(), lin.weight.detach() * torch.as_tensor(mask))


def test_inference_only():
    mod = HiNMLinear.from_dense(_linear(), "2:4")
    x = torch.randn(2, 32, requires_grad=True)
    with pytest.raises(RuntimeError, match="inference-only"):
        mod(x)
    with torch.no_grad():
        assert mod(x).shape == (2, 40)
    with pytest.raises(ValueError, match="width 32"):
        with torch.no_grad():
            mod(torch.randn(2, 31))
    with pytest.raises(TypeError, match="nn.Linear"):
        HiNMLinear.from_dense(torch.nn.LayerNorm(4), "2:4")


@pytest.mark.parametrize("config", ["hinm:v16:0.5:2:4", "2:4"])
def test_state_dict_round_trip_exact(config):
    a = HiNMLinear.from_dense(_linear(seed=1), config)
    b = HiNMLinear.from_dense(_linear(seed=2, out_f=24), "hinm:v8:0.5:2:4")  # other shape and kind
    b.load_state_dict(a.state_dict())
    for (ka, va), (kb, vb) in zip(sorted(a.state_dict().items()), sorted(b.state_dict().items())):
        assert ka == kb and va.dtype == vb.dtype and torch.equal(va, vb)
    assert torch.equal(a.to_dense(), b.to_dense()) and b.out_features == 40
    bad = dict(a.state_dict())
    bad["sparse_indices"] = torch.full_like(bad["sparse_indices"], 7)
    with pytest.raises(RuntimeError, match="bad compressed weight"):
        b.load_state_dict(bad)


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(5)
        self.a = torch.nn.Linear(32, 64)
        self.norm = torch.nn.LayerNorm(64)
        self.b = torch.nn.Linear(64, 16)

    def forward(self, x):
        return self.b(self.norm(torch.relu(self.a(x))))


def _pruned():
    net = Net()
    net.a = HiNMLinear.from_dense(net.a, "hinm:v16:0.5:2:4")
    net.b = HiNMLinear.from_dense(net.b, "2:4")
    return net


def test_save_load_model_bit_exact(tmp_path):
    net = _pruned()
    path = tmp_path / "net.safetensors"
    hinm.save(net, path)
    fresh = hinm.load(path, Net())
    assert isinstance(fresh.a, HiNMLinear) and isinstance(fresh.b, HiNMLinear)
    sd, sd2 = net.state_dict(), fresh.state_dict()
    assert sd.keys() == sd2.keys() and all(torch.equal(sd[k], sd2[k]) for k in sd)
    x = torch.randn(7, 32)
    with torch.no_grad():
        assert torch.equal(net(x), fresh(x))
    flat = hinm.load(path)
    assert isinstance(flat["a"], hinm.HiNMTensor) and isinstance(flat["b"], hinm.NMTensor)


def test_save_load_tensors(tmp_path):
    w = torch.randn(32, 16)
    items = {"hinm": hinm.compress(w, "hinm:v16:0.5:2:4"), "nm": hinm.compress(w, "2:4"), "plain": torch.arange(5)}
    hinm.save(items, tmp_path / "t.safetensors")
    back = hinm.load(tmp_path / "t.safetensors")
    assert torch.equal(back["hinm"].to_dense(), items["hinm"].to_dense())
    assert torch.equal(back["nm"].to_dense(), items["nm"].to_dense()) and torch.equal(back["plain"], items["plain"])
    with pytest.raises(ValueError, match="not a model"):
        hinm.load(tmp_path / "t.safetensors", Net())


def test_bad_files(tmp_path):
    path = tmp_path / "net.safetensors"
    hinm.save(_pruned(), path)
    data = path.read_bytes()
    (tmp_path / "trunc.safetensors").write_bytes(data[: len(data) - 100])
    with pytest.raises(ValueError, match="truncated|corrupted|readable"):
        hinm.load(tmp_path / "trunc.safetensors", Net())
    flipped = bytearray(data)
    flipped[-10] ^= 0xFF
    (tmp_path / "flip.safetensors").write_bytes(bytes(flipped))
    with pytest.raises(ValueError, match="checksum"):
        hinm.load(tmp_path / "flip.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="readable"):
        hinm.load(tmp_path / "junk.safetensors")
    with pytest.raises(ValueError, match="no such"):
        hinm.load(tmp_path / "missing.safetensors")
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(ValueError, match="not a hinm checkpoint"):
        hinm.load(tmp_path / "plain.safetensors")

    class Other(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Linear(32, 48)
            self.b = torch.nn.Linear(64, 16)

    with pytest.raises(ValueError, match="'a' is 48×32"):
        hinm.load(path, Other())
    net = Net()
    net.norm = torch.nn.LayerNorm(65)
    with pytest.raises(ValueError, match="does not match"):
        hinm.load(path, net)
