"""HiNMLinear.forward against the dense masked nn.Linear (2-D/3-D, strided, other dtypes, bias or
not, grad modes, thread counts) and the MLP permutation fold (bit-identical pair outputs)."""

import pytest

torch = pytest.importorskip("torch")

import hinm  # noqa: E402
from hinm._timing import matched_threads, time_forwards  # noqa: E402
from hinm.nn import HiNMLinear, fold_mlp_permutations, fold_row_permutation  # noqa: E402

# batches below and above hinm.ops' small-batch (rows) path threshold
SHAPES = [(3,), (40,), (2, 5), (3, 13)]


def _perm(rows, cols, v, seed):
    g = torch.Generator().manual_seed(seed)
    tiles = -(-rows // v)
    return {"row_perm": torch.randperm(rows, generator=g),
            "col_orders": torch.stack([torch.randperm(cols, generator=g) for _ in range(tiles)])}


def _module(config="hinm:v16:0.5:2:4", out_f=48, in_f=32, bias=True, seed=0, permuted=True):
    torch.manual_seed(seed)
    lin = torch.nn.Linear(in_f, out_f, bias=bias)
    perm = _perm(out_f, in_f, 16, seed + 1) if permuted and config.startswith("hinm") else None
    return lin, HiNMLinear.from_dense(lin, config, perm=perm)


def _reference(mod, lin, x):
    """The dense masked linear in float64 (exact up to the kernel's float32 rounding)."""
    w = mod.to_dense().double()
    b = None if lin.bias is None else lin.bias.detach().double()
    return torch.nn.functional.linear(x.double(), w, b)


@pytest.mark.parametrize("config", ["hinm:v16:0.5:2:4", "hinm:v16:0.25:1:4", "2:4"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("lead", SHAPES)
def test_forward_equals_dense_masked(config, bias, lead):
    lin, mod = _module(config, bias=bias)
    x = torch.randn(*lead, 32)
    with torch.no_grad():
        y = mod(x)
    assert y.shape == (*lead, 48) and y.dtype == torch.float32
    torch.testing.assert_close(y.double(), _reference(mod, lin, x), rtol=1e-5, atol=1e-5)


def test_masked_weight_is_the_compressed_one():
    lin, mod = _module(permuted=False)
    mask, _ = hinm.hinm_mask(lin.weight.detach().abs(), "hinm:v16:0.5:2:4")
    assert torch.equal(mod.to_dense(), lin.weight.detach() * torch.as_tensor(mask))


@pytest.mark.parametrize("make", [
    lambda: torch.randn(32, 6).t(),                      # transposed 2-D
    lambda: torch.randn(6, 64)[:, ::2],                  # strided columns
    lambda: torch.randn(4, 32, 5).transpose(1, 2),       # 3-D, last dim strided
    lambda: torch.randn(8, 5, 32)[::2],                  # 3-D, strided batch (reshape is a view)
])
def test_non_contiguous_inputs(make):
    lin, mod = _module()
    x = make()
    assert not x.is_contiguous()
    with torch.inference_mode():
        y = mod(x)
        same = mod(x.contiguous())
    assert torch.equal(y, same)
    torch.testing.assert_close(y.double(), _reference(mod, lin, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_other_input_dtypes_come_back_in_their_dtype(dtype):
    lin, mod = _module()
    x = torch.randn(2, 3, 32).to(dtype)
    with torch.no_grad():
        y = mod(x)
        ref = mod(x.float())
    assert y.dtype == dtype
    assert torch.equal(y, ref.to(dtype))


def test_grad_modes():
    lin, mod = _module()
    x = torch.randn(5, 32)
    plain = mod(x)  # grad mode on, but nothing asks for a gradient
    assert not plain.requires_grad
    with torch.no_grad():
        assert torch.equal(mod(x), plain)
    with torch.inference_mode():
        y = mod(x)
        assert y.is_inference() and torch.equal(y, plain)
    xg = x.clone().requires_grad_(True)
    with pytest.raises(RuntimeError, match="inference-only"):
        mod(xg)
    with torch.no_grad():
        assert torch.equal(mod(xg), plain)


def test_bad_width():
    _, mod = _module()
    with pytest.raises(ValueError, match="width 32"):
        with torch.no_grad():
            mod(torch.randn(2, 3, 31))


@pytest.mark.parametrize("lead", [(3,), (2, 20)])
def test_thread_count_independent(lead):
    _, mod = _module(out_f=256, in_f=128)
    x = torch.randn(*lead, 128)
    outs = []
    try:
        for n in (1, 2, 3):
            hinm.set_num_threads(n)
            with torch.no_grad():
                outs.append(mod(x))
    finally:
        hinm.set_num_threads(0)
    assert all(torch.equal(outs[0], o) for o in outs[1:])


def test_cached_container_follows_new_weights():
    _, a = _module(seed=1)
    _, b = _module(seed=2)
    x = torch.randn(4, 32)
    with torch.no_grad():
        before = a(x)
        a.load_state_dict(b.state_dict())
        assert torch.equal(a(x), b(x)) and not torch.equal(a(x), before)
        a.float()  # moves/copies buffers through _apply: still consistent
        assert torch.equal(a(x), b(x))


@pytest.mark.parametrize("config", ["hinm:v16:0.5:2:4", "2:4", "hinm:v16:0.25:1:4"])
def test_prepacked_module_gives_the_same_bits(config):
    # batches on the rows path (1-12) and the panel path (40, 130: float32 2:4 reads the pack there)
    import copy
    import pickle

    _, plain = _module(config, out_f=72, in_f=96)
    packed = copy.deepcopy(plain).prepack()
    _, other = _module(config, out_f=72, in_f=96, seed=5)
    with torch.no_grad():
        for lead in [(1,), (5,), (40,), (130,), (3, 13)]:
            x = torch.randn(*lead, 96)
            assert torch.equal(packed(x), plain(x))
        assert hinm.nn.prepack_(torch.nn.Sequential(packed, torch.nn.ReLU())) == 1
        x = torch.randn(40, 96)
        # the kernels' handle is neither copied nor pickled, the wish is
        for twin in (copy.deepcopy(packed), pickle.loads(pickle.dumps(packed))):
            assert twin._pack_wanted and twin._packed is None
            assert torch.equal(twin(x), plain(x)) and twin._packed is not None
        packed.load_state_dict(other.state_dict())  # new buffers: packed again at the next call
        assert torch.equal(packed(x), other(x))
        packed.sparse_values.mul_(2)  # an in-place edit the old copy cannot follow
        if packed._packed[1].nbytes:
            with pytest.raises(RuntimeError, match="prepack"):
                packed(x)
        packed.prepack()
        edited = hinm.nn.sparse_linear(x, packed.container, packed.bias)  # the weight itself, edited
        assert torch.equal(packed(x), edited) and not torch.equal(edited, other(x))
        assert packed.prepack(False)._packed is None and torch.equal(packed(x), packed(x))


# ---- the MLP permutation fold -------------------------------------------------------------------
def _mlp(seed=0, hidden=64, width=32, bias=True, config="hinm:v16:0.5:2:4"):
    torch.manual_seed(seed)
    up, down = torch.nn.Linear(width, hidden, bias=bias), torch.nn.Linear(hidden, width, bias=bias)
    return (HiNMLinear.from_dense(up, config, perm=_perm(hidden, width, 16, seed + 1)),
            HiNMLinear.from_dense(down, config, perm=_perm(width, hidden, 16, seed + 2)))


@pytest.mark.parametrize("bias", [True, False])
def test_fold_is_bit_identical(bias):
    up, down = _mlp(bias=bias)
    x = torch.randn(3, 9, 32)
    with torch.no_grad():
        before = down(torch.nn.functional.gelu(up(x)))
        assert fold_row_permutation(up, down)
        after = down(torch.nn.functional.gelu(up(x)))
    assert torch.equal(before, after)
    assert torch.equal(up.sparse_state()["row_perm"], torch.arange(64))
    assert not fold_row_permutation(up, down)  # nothing left to fold
    fresh_up, fresh_down = _mlp(seed=7, bias=bias)
    fresh_up.load_state_dict(up.state_dict())  # the folded pair round-trips through state dicts
    fresh_down.load_state_dict(down.state_dict())
    with torch.no_grad():
        assert torch.equal(fresh_down(torch.nn.functional.gelu(fresh_up(x))), before)


def test_fold_refuses_what_it_cannot_do():
    up, down = _mlp()
    state = {k: v.clone() for k, v in up.state_dict().items()}
    _, nm = _module("2:4", out_f=32, in_f=64)
    assert not fold_row_permutation(up, nm)  # consumer without a column gather
    _, other = _module(out_f=32, in_f=48)
    assert not fold_row_permutation(up, other)  # widths differ
    torch.manual_seed(0)
    padded = HiNMLinear.from_dense(torch.nn.Linear(32, 40), "hinm:v16:0.5:2:4", perm=_perm(40, 32, 16, 3))
    _, reader = _module(out_f=32, in_f=40, config="hinm:v8:0.5:2:4", permuted=False)
    assert not fold_row_permutation(padded, reader)  # 40 rows in tiles of 16: padded slots
    assert all(torch.equal(state[k], v) for k, v in up.state_dict().items())


class _Intermediate(torch.nn.Module):
    def __init__(self, dense, extra=False):
        super().__init__()
        self.dense = dense
        self.intermediate_act_fn = torch.nn.GELU()
        if extra:  # a second stateful child: the fold must not assume dense → act only
            self.norm = torch.nn.LayerNorm(dense.out_features)

    def forward(self, x):
        y = self.intermediate_act_fn(self.dense(x))
        return self.norm(y) if hasattr(self, "norm") else y


class _Output(torch.nn.Module):
    def __init__(self, dense):
        super().__init__()
        self.dense = dense

    def forward(self, h, x):
        return self.dense(h) + x


class _Layer(torch.nn.Module):
    def __init__(self, seed, extra=False):
        super().__init__()
        up, down = _mlp(seed=seed)
        self.intermediate, self.output = _Intermediate(up, extra), _Output(down)

    def forward(self, x):
        return self.output(self.intermediate(x), x)


def test_fold_mlp_permutations_on_a_model():
    model = torch.nn.Sequential(_Layer(0), _Layer(3), _Layer(6, extra=True))
    x = torch.randn(2, 7, 32)
    with torch.no_grad():
        before = model(x)
        folded = fold_mlp_permutations(model)
        after = model(x)
    assert folded == ["0.intermediate.dense", "1.intermediate.dense"]
    assert torch.equal(before, after)


def test_sparsify_folds_by_default():
    from hinm.sparsify import sparsify_

    def dense_model():
        torch.manual_seed(11)
        layers = [_Layer(0), _Layer(1)]
        for layer in layers:  # back to plain nn.Linear layers, as a model to be pruned has
            layer.intermediate.dense = layer.intermediate.dense.to_linear()
            layer.output.dense = layer.output.dense.to_linear()
        return torch.nn.Sequential(*layers)

    a, b = dense_model(), dense_model()
    sparsify_(a, "hinm:v16:0.5:2:4", permute="random", progress=False)
    sparsify_(b, "hinm:v16:0.5:2:4", permute="random", progress=False, fold_permutations=False)
    x = torch.randn(3, 5, 32)
    with torch.no_grad():
        assert torch.equal(a(x), b(x))
    assert torch.equal(a[0].intermediate.dense.sparse_state()["row_perm"], torch.arange(64))
    assert not torch.equal(b[0].intermediate.dense.sparse_state()["row_perm"], torch.arange(64))


# ---- the timing helper behind `hinm demo` and bench/bench_forward.py ------------------------------
def test_time_forwards_interleaves_and_matches_threads():
    calls = []
    before = torch.get_num_threads()
    try:
        t = time_forwards({"a": "A", "b": "B"}, calls.append, repeats=3, threads=1)
        assert hinm.get_num_threads() == torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
        hinm.set_num_threads(0)
    assert calls == ["A", "B"] * 4  # warm-up, then interleaved repetitions
    assert set(t) == {"a", "b"} and all(0 <= v.wall_min <= v.wall_median and v.repeats == 3 for v in t.values())
    with pytest.raises(ValueError, match="repeats"):
        time_forwards({"a": "A"}, calls.append, repeats=0)
    assert matched_threads() == hinm.get_num_threads()
    hinm.set_num_threads(0)
