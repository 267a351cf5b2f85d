"""HiNM masks and the HiNMTensor container against a slow numpy reference."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hinm
from conftest import needs_cuda, needs_torch


def ref_hinm_mask(scores, cfg, row_perm=None, col_order=None):
    """Loops over tiles: column sums, stable top-Kt, order by col_order, n:m per group of kept columns."""
    r, k = scores.shape
    kt = cfg.kept_columns(k)
    tiles = -(-r // cfg.v)
    row_perm = np.arange(r) if row_perm is None else np.asarray(row_perm)
    mask = np.zeros((r, k), bool)
    kept_all = []
    for t in range(tiles):
        rows = row_perm[t * cfg.v:(t + 1) * cfg.v]
        colsum = scores[rows].astype(np.float64).sum(0)
        top = set(np.argsort(-colsum, kind="stable")[:kt].tolist())
        order = np.arange(k) if col_order is None else np.asarray(col_order[t])
        kept = [c for c in order if c in top]
        kept_all.append(kept)
        for row in rows:
            for g in range(kt // cfg.m):
                cols = kept[g * cfg.m:(g + 1) * cfg.m]
                best = np.argsort(-scores[row, cols], kind="stable")[:cfg.n]
                mask[row, np.asarray(cols)[best]] = True
    return mask, np.asarray(kept_all, dtype=np.int32)


CONFIGS = [hinm.HiNMConfig(4, 0.5, 2, 4), hinm.HiNMConfig(8, 0.25, 2, 4), hinm.HiNMConfig(32, 0.5, 2, 4),
           hinm.HiNMConfig(64, 0.5, 1, 2), hinm.HiNMConfig(128, 0.5, 2, 8), hinm.HiNMConfig(16, 0.75, 1, 4)]


@pytest.mark.parametrize("cfg", CONFIGS, ids=str)
@pytest.mark.parametrize("permuted", [False, True])
def test_hinm_mask_matches_reference(rng, cfg, permuted, threads):
    r, k = cfg.v * 2 + 3, 40  # R not a multiple of v: the last tile is partial
    scores = np.abs(rng.standard_normal((r, k))).astype(np.float32)
    scores[:, :8] = 1.0  # ties between columns and inside groups
    tiles = -(-r // cfg.v)
    row_perm = rng.permutation(r) if permuted else None
    col_order = np.stack([rng.permutation(k) for _ in range(tiles)]) if permuted else None
    mask, kept = hinm.hinm_mask(scores, cfg, row_perm, col_order)
    ref_mask, ref_kept = ref_hinm_mask(scores, cfg, row_perm, col_order)
    np.testing.assert_array_equal(kept, ref_kept)
    np.testing.assert_array_equal(mask, ref_mask)


@pytest.mark.parametrize("cfg", CONFIGS, ids=str)
@pytest.mark.parametrize("dtype", ["float32", "float16", "int8"])
def test_compress_roundtrip_bit_exact(rng, cfg, dtype):
    r, k = cfg.v + 5, 48
    w = (rng.standard_normal((r, k)) * 30).astype(dtype)
    tiles = -(-r // cfg.v)
    perm = {"row_perm": rng.permutation(r), "col_orders": np.stack([rng.permutation(k) for _ in range(tiles)])}
    h = hinm.compress(w, cfg, perm=perm)
    mask, _ = ref_hinm_mask(np.abs(w.astype(np.float32)), cfg, perm["row_perm"], perm["col_orders"])
    expect = np.where(mask, w, 0).astype(dtype)
    np.testing.assert_array_equal(h.to_dense().view(np.uint8), expect.view(np.uint8))
    assert h.values.shape == (tiles * cfg.v, cfg.kept_columns(k) * cfg.n // cfg.m)
    assert h.density == pytest.approx(cfg.kept_columns(k) / k * cfg.n / cfg.m)
    h.validate()
    h2 = hinm.HiNMTensor.from_state_dict(h.state_dict())
    np.testing.assert_array_equal(h2.to_dense().view(np.uint8), expect.view(np.uint8))


def test_retained_saliency_and_scores(rng):
    w = rng.standard_normal((64, 64)).astype(np.float32)
    cfg = hinm.HiNMConfig(32, 0.5, 2, 4)
    mask, _ = hinm.hinm_mask(np.abs(w), cfg)
    ret = hinm.retained_saliency(np.abs(w), mask)
    assert ret == pytest.approx(np.abs(w)[mask].sum() / np.abs(w).sum())
    unstructured = np.sort(np.abs(w).ravel())[::-1][: mask.sum()].sum() / np.abs(w).sum()
    assert 0.25 < ret < unstructured
    scores = rng.random((64, 64)).astype(np.float32)
    h = hinm.compress(w, cfg, scores=scores)
    np.testing.assert_array_equal(h.to_dense() != 0, hinm.hinm_mask(scores, cfg)[0])


def test_nm_config_with_column_permutation_gives_single_tile(rng):
    w = rng.standard_normal((6, 16)).astype(np.float32)
    assert isinstance(hinm.compress(w, "2:4"), hinm.NMTensor)
    col_perm = rng.permutation(16)
    h = hinm.compress(w, "2:4", perm={"col_perm": col_perm})
    assert isinstance(h, hinm.HiNMTensor) and h.tiles == 1
    # n:m over groups of the permuted column order
    ref = np.zeros_like(w)
    for r in range(6):
        for g in range(4):
            cols = col_perm[g * 4:(g + 1) * 4]
            keep = cols[np.argsort(-np.abs(w[r, cols]), kind="stable")[:2]]
            ref[r, keep] = w[r, keep]
    np.testing.assert_array_equal(h.to_dense(), ref)


@settings(max_examples=40, deadline=None)
@given(v=st.sampled_from([2, 4, 8, 16]), vd=st.sampled_from([0.25, 0.5, 1.0]),
       pattern=st.sampled_from([(1, 2), (2, 4), (1, 4), (2, 8)]), rows=st.integers(1, 40),
       groups=st.integers(4, 8), seed=st.integers(0, 2**31 - 1))
def test_property_roundtrip(v, vd, pattern, rows, groups, seed):
    n, m = pattern
    k = groups * 8
    cfg = hinm.HiNMConfig(v, vd, n, m)
    r = np.random.default_rng(seed)
    w = r.standard_normal((rows, k)).astype(np.float16)
    h = hinm.compress(w, cfg, perm={"row_perm": r.permutation(rows)})
    d = h.to_dense()
    mask, _ = hinm.hinm_mask(np.abs(w.astype(np.float32)), cfg, h.row_perm)
    np.testing.assert_array_equal(d != 0, mask & (w != 0))
    np.testing.assert_array_equal(d[mask], w[mask])
    np.testing.assert_array_equal(hinm.HiNMTensor.from_state_dict(h.state_dict()).to_dense(), d)


@needs_torch
def test_torch_bfloat16_roundtrip():
    import torch

    w = torch.randn(70, 32, dtype=torch.bfloat16)
    h = hinm.compress(w, hinm.HiNMConfig(32, 0.5, 2, 4))
    assert h.values.dtype == torch.bfloat16 and isinstance(h.row_perm, torch.Tensor)
    mask, _ = hinm.hinm_mask(w.float().abs(), h.config)
    assert torch.equal(h.to_dense(), torch.where(mask, w, torch.zeros_like(w)))
    sd = h.state_dict()
    assert torch.equal(hinm.HiNMTensor.from_state_dict(sd).to_dense(), h.to_dense())


def _sd(rng):
    return hinm.compress(rng.standard_normal((40, 32)).astype(np.float32), "hinm:v16:0.5:2:4").state_dict()


def _set(key, index, value):
    def corrupt(sd):
        sd[key] = sd[key].copy()
        sd[key][index] = value
    return corrupt


@pytest.mark.parametrize("corrupt, match", [
    (lambda sd: sd.pop("col_idx"), "missing 'col_idx'"),
    (lambda sd: sd.update(format_version=np.array([2])), "format version"),
    (lambda sd: sd.update(pattern=np.array([16, 4, 4])), "bad config"),
    (lambda sd: sd.update(vec_density=np.array([1.5])), "bad config"),
    (lambda sd: sd.pop("vec_density"), "vec_density"),
    (lambda sd: sd.update(values=sd["values"][:20]), "shape"),
    (lambda sd: sd.update(row_perm=sd["row_perm"][:-1]), "shape"),
    (lambda sd: sd.update(col_idx=sd["col_idx"].astype(np.int64)), "dtype"),
    (_set("col_idx", (0, 3), 99), "out of range"),
    (_set("col_idx", (1, 3), -1), "out of range"),
    (lambda sd: _set("col_idx", (0, 1), sd["col_idx"][0, 0])(sd), "twice"),
    (_set("row_perm", 0, 1), "permutation"),
    (_set("indices", (2, 1), 9), "strictly increasing"),
    (_set("values", (45, 0), 1.0), "padding slot"),
])
def test_corrupted_state_dict_is_rejected(rng, corrupt, match):
    sd = _sd(rng)
    corrupt(sd)
    with pytest.raises(ValueError, match=match):
        hinm.HiNMTensor.from_state_dict(sd)


def test_bad_inputs(rng):
    w = rng.standard_normal((16, 32)).astype(np.float32)
    cfg = hinm.HiNMConfig(8, 0.5, 2, 4)
    bad = np.abs(w)
    bad[3, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        hinm.hinm_mask(bad, cfg)
    with pytest.raises(ValueError, match=r"weight contains NaN \(first at row 3, column 3\)"):
        hinm.compress(bad, cfg)
    with pytest.raises(ValueError, match="permutation"):
        hinm.compress(w, cfg, perm={"row_perm": np.zeros(16, dtype=np.int64)})
    with pytest.raises(ValueError, match="shape"):
        hinm.compress(w, cfg, perm={"row_perm": np.arange(15)})
    with pytest.raises(ValueError, match=r"col_order\[1\]"):
        hinm.hinm_mask(np.abs(w), cfg, col_order=np.stack([np.arange(32), np.zeros(32, dtype=np.int64)]))
    with pytest.raises(TypeError, match="integers"):
        hinm.compress(w, cfg, perm={"row_perm": np.arange(16, dtype=np.float32)})
    with pytest.raises(ValueError, match="fewer than m"):
        hinm.compress(w[:, :4], hinm.HiNMConfig(8, 0.25, 2, 4))
    with pytest.raises(TypeError):
        hinm.compress(w.astype(np.float64), cfg)
    with pytest.raises(ValueError, match="cannot parse"):
        hinm.compress(w, "hinm:64:0.5:2:4")


def test_config_parsing_and_validation():
    cfg = hinm.HiNMConfig.parse("hinm:v64:0.5:2:4")
    assert cfg == hinm.HiNMConfig(64, 0.5, 2, 4) and cfg.sparsity == pytest.approx(0.75)
    assert hinm.parse_config(str(cfg)) == cfg
    assert hinm.parse_config("2:4") == hinm.NMConfig(2, 4)
    assert hinm.HiNMConfig(64, 0.25, 2, 4).sparsity == pytest.approx(0.875)
    for bad in [dict(v=0), dict(vec_density=0.0), dict(vec_density=1.2), dict(n=4, m=4)]:
        with pytest.raises(ValueError):
            hinm.HiNMConfig(**bad)


# ----------------------------------------------------------------------------- more checks

def random_perms(rng, r, k, v):
    return rng.permutation(r), np.stack([rng.permutation(k) for _ in range(-(-r // v))])


def test_config_normalisation():
    assert hinm.HiNMConfig(np.int64(32), 1, np.int32(2), 4) == hinm.HiNMConfig(32, 1.0, 2, 4)
    assert isinstance(hinm.HiNMConfig(32, 1, 2, 4).vec_density, float)
    assert hinm.NMConfig(np.int64(1), np.int64(4)).sparsity == 0.75
    for args in [(True, 0.5, 2, 4), (64, "0.5", 2, 4), (64.0, 0.5, 2, 4), (64, 0.5, 2.0, 4)]:
        with pytest.raises(TypeError):
            hinm.HiNMConfig(*args)
    with pytest.raises(ValueError):
        hinm.HiNMConfig(64, float("nan"), 2, 4)
    for bad in ["hinm:v64:0.5:2", "hinm:vx:0.5:2:4", "2:4:8", "a:b", "hinm:v64:half:2:4"]:
        with pytest.raises(ValueError, match="cannot parse"):
            hinm.parse_config(bad)


@pytest.mark.parametrize("v", [4, 32, 128])
def test_hinm_mask_signed_ties_with_permutations(rng, v, threads):
    r, k = 2 * v + 5, 32
    for cfg in [hinm.HiNMConfig(v, 0.5, 2, 4), hinm.HiNMConfig(v, 0.75, 1, 2), hinm.HiNMConfig(v, 0.5, 2, 8)]:
        scores = np.round(rng.standard_normal((r, k)) * 1.5).astype(np.float32)  # ties everywhere, signed
        rp, co = random_perms(rng, r, k, v)
        mask, kept = hinm.hinm_mask(scores, cfg, rp, co)
        ref_mask, ref_kept = ref_hinm_mask(scores, cfg, rp, co)
        np.testing.assert_array_equal(kept, ref_kept)
        np.testing.assert_array_equal(mask, ref_mask)


def test_mask_structure_and_tile_order(rng):
    r, k, cfg = 50, 48, hinm.HiNMConfig(16, 0.5, 2, 4)
    rp, co = random_perms(rng, r, k, cfg.v)
    mask, kept = hinm.hinm_mask(rng.random((r, k)), cfg, rp, co)
    for t in range(kept.shape[0]):
        assert len(set(kept[t].tolist())) == cfg.kept_columns(k)
        rows = rp[t * cfg.v:(t + 1) * cfg.v]
        assert not mask[np.ix_(rows, np.setdiff1d(np.arange(k), kept[t]))].any()
        assert (mask[np.ix_(rows, kept[t])].reshape(len(rows), -1, cfg.m).sum(axis=2) == cfg.n).all()
        pos = np.argsort(co[t])  # position of every column in the tile's order
        assert (np.diff(pos[kept[t]]) > 0).all()


def test_ties_go_to_lower_index():
    mask, kept = hinm.hinm_mask(np.ones((4, 8), np.float32), hinm.HiNMConfig(4, 0.5, 2, 4))
    np.testing.assert_array_equal(kept, [[0, 1, 2, 3]])
    np.testing.assert_array_equal(mask, np.tile([1, 1, 0, 0, 0, 0, 0, 0], (4, 1)).astype(bool))


def test_single_col_order_broadcasts_and_plain_nm_mask(rng):
    scores = rng.random((10, 16))
    order = rng.permutation(16)
    cfg = hinm.HiNMConfig(4, 0.5, 2, 4)
    a = hinm.hinm_mask(scores, cfg, col_order=order)
    b = hinm.hinm_mask(scores, cfg, col_order=np.tile(order, (3, 1)))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    mask, kept = hinm.hinm_mask(scores, "2:4")
    np.testing.assert_array_equal(mask, hinm.nm_mask(scores, 2, 4))
    np.testing.assert_array_equal(kept, [np.arange(16)])
    with pytest.raises(ValueError, match="multiple of m"):
        hinm.hinm_mask(scores[:, :10], "2:4")


@needs_torch
def test_mask_torch_in_torch_out(rng):
    import torch

    scores = torch.from_numpy(rng.random((12, 16)).astype(np.float32))
    mask, kept = hinm.hinm_mask(scores, "hinm:v4:0.5:2:4")
    assert mask.dtype == torch.bool and kept.dtype == torch.int32
    np.testing.assert_array_equal(mask.numpy(), ref_hinm_mask(scores.numpy(), hinm.HiNMConfig(4, 0.5, 2, 4))[0])


def test_more_bad_mask_inputs(rng):
    s = rng.random((8, 16)).astype(np.float32)
    cfg = hinm.HiNMConfig(4, 0.5, 2, 4)
    with pytest.raises(ValueError, match="row_perm"):
        hinm.hinm_mask(s, cfg, row_perm=np.arange(1, 9))  # out of range
    with pytest.raises(ValueError, match="row_perm"):
        hinm.hinm_mask(s, cfg, row_perm=np.arange(7))
    with pytest.raises(ValueError, match="col_orders"):
        hinm.hinm_mask(s, cfg, col_order=np.tile(np.arange(16), (3, 1)))  # 3 orders for 2 tiles
    with pytest.raises(TypeError):
        hinm.hinm_mask(s, cfg, col_order=np.tile(np.arange(16.0), (2, 1)))
    with pytest.raises(ValueError, match="2-D"):
        hinm.hinm_mask(s[0], cfg)


def test_thread_count_independence(rng):
    r, k, cfg = 300, 96, hinm.HiNMConfig(8, 0.5, 2, 4)
    scores = np.round(rng.standard_normal((r, k)) * 2).astype(np.float32)
    w = rng.standard_normal((r, k)).astype(np.float32)
    rp, co = random_perms(rng, r, k, cfg.v)
    results = []
    try:
        for threads in (1, 2, 3):
            hinm.set_num_threads(threads)
            mask, kept = hinm.hinm_mask(scores, cfg, rp, co)
            t = hinm.compress(w, cfg, perm={"row_perm": rp, "col_orders": co}, scores=scores)
            results.append((mask, kept, t.values, t.indices, t.col_idx, t.to_dense()))
    finally:
        hinm.set_num_threads(0)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)


def test_retained_saliency_edge_cases(rng):
    s = rng.random((16, 32))
    mask, _ = hinm.hinm_mask(s, "hinm:v8:0.5:2:4")
    assert hinm.retained_saliency(s, mask) == pytest.approx(s[mask].sum() / s.sum(), rel=1e-12)
    assert hinm.retained_saliency(s, np.ones_like(mask)) == 1.0
    assert hinm.retained_saliency(np.zeros((2, 4)), np.zeros((2, 4), bool)) == 1.0
    with pytest.raises(ValueError, match="shape"):
        hinm.retained_saliency(s, mask[:4])
    s[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        hinm.retained_saliency(s, mask)


@needs_torch
def test_retained_saliency_bfloat16():
    import torch

    s = torch.tensor([[1.0, 2.0, 3.0, 4.0]], dtype=torch.bfloat16)
    mask = torch.tensor([[False, False, True, True]])
    assert hinm.retained_saliency(s, mask) == pytest.approx(0.7)


def test_padding_slots_and_identity_fields(rng):
    w = (rng.standard_normal((37, 24)) * 20).astype(np.float16)
    h = hinm.compress(w, hinm.HiNMConfig(8, 0.5, 2, 4))
    assert h.values.shape == (40, 6) and not h.values[37:].any()
    assert (h.indices[37:].reshape(3, -1, 2) == np.arange(2)).all()  # legal metadata in padding
    np.testing.assert_array_equal(h.row_perm, np.arange(37))
    assert h.row_perm.dtype == np.int64 and h.col_idx.dtype == np.int32 and h.sptc_meta is None
    mask, kept = hinm.hinm_mask(np.abs(w.astype(np.float32)), h.config)
    np.testing.assert_array_equal(h.col_idx, kept)
    np.testing.assert_array_equal(h.to_dense().view(np.uint16), np.where(mask, w, 0).astype(np.float16).view(np.uint16))


@needs_torch
@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float32", "int8"])
def test_compress_torch_permutation_result_like(rng, dtype):
    import torch

    w = (torch.randn(40, 32, generator=torch.Generator().manual_seed(0)) * 20).to(getattr(torch, dtype))
    rp, co = random_perms(rng, 40, 32, 16)

    class Perm:  # a PermutationResult-like object (attributes, torch tensors)
        row_perm = torch.from_numpy(rp)
        col_orders = torch.from_numpy(co)

    h = hinm.compress(w, "hinm:v16:0.5:2:4", perm=Perm())
    assert isinstance(h.values, torch.Tensor) and h.values.dtype == w.dtype
    mask, _ = ref_hinm_mask(w.float().abs().numpy(), h.config, rp, co)
    dense = h.to_dense()
    assert dense.dtype == w.dtype
    assert torch.equal(dense, torch.where(torch.from_numpy(mask), w, torch.zeros_like(w)))
    back = hinm.HiNMTensor.from_state_dict(h.state_dict())
    assert torch.equal(back.to_dense(), dense)


def test_col_perm_applies_to_every_tile(rng):
    w = rng.standard_normal((20, 16)).astype(np.float32)
    order = rng.permutation(16)
    a = hinm.compress(w, "hinm:v4:0.5:2:4", perm={"col_perm": order})
    b = hinm.compress(w, "hinm:v4:0.5:2:4", perm={"col_orders": np.tile(order, (5, 1))})
    np.testing.assert_array_equal(a.to_dense(), b.to_dense())
    np.testing.assert_array_equal(a.col_idx, b.col_idx)


def _valid_sd(rng):
    w = rng.standard_normal((70, 24)).astype(np.float32)
    rp, co = random_perms(rng, 70, 24, 32)
    return hinm.compress(w, "hinm:v32:0.5:2:4", perm={"row_perm": rp, "col_orders": co}).state_dict()


def _edit(key, fn):
    def corrupt(sd):
        sd[key] = fn(np.array(sd[key], copy=True))
    return corrupt


def _poke(key, index, value):
    def fn(a):
        a[index] = value(a) if callable(value) else value
        return a
    return _edit(key, fn)


MORE_CORRUPTIONS = {
    "truncated indices": _edit("indices", lambda a: a[:, :-1]),
    "flat col_idx": _edit("col_idx", lambda a: a.reshape(-1)),
    "values float64": _edit("values", lambda a: a.astype(np.float64)),
    "indices int8": _edit("indices", lambda a: a.astype(np.int8)),
    "row_perm int32": _edit("row_perm", lambda a: a.astype(np.int32)),
    "duplicate row": _poke("row_perm", 7, lambda a: a[6]),
    "row_perm out of range": _poke("row_perm", 0, 70),
    "positions equal": _poke("indices", (3, 1), lambda a: a[3, 0]),
    "position >= m": _poke("indices", (5, 1), 4),
    "shape mismatch": _edit("shape", lambda a: a + 1),
    "negative shape": _edit("shape", lambda a: -a),
    "shape of 3": _edit("shape", lambda a: np.append(a, 1)),
    "v = 0": _poke("pattern", 0, 0),
    "v changed": _poke("pattern", 0, 16),
    "vec_density changed": _edit("vec_density", lambda a: a / 2),
    "vec_density as int": _edit("vec_density", lambda a: a.astype(np.int64)),
    "vec_density nan": _edit("vec_density", lambda a: a * np.nan),
    "version as float": _edit("format_version", lambda a: a.astype(np.float64)),
}


@pytest.mark.parametrize("name", sorted(MORE_CORRUPTIONS))
def test_more_corrupted_state_dicts_are_rejected(rng, name):
    sd = _valid_sd(rng)
    hinm.HiNMTensor.from_state_dict(dict(sd))  # the intact dict loads
    MORE_CORRUPTIONS[name](sd)
    with pytest.raises(ValueError):
        hinm.HiNMTensor.from_state_dict(sd)


@pytest.mark.parametrize("key", ["format_version", "shape", "pattern", "values", "indices", "row_perm"])
def test_missing_key_is_rejected(rng, key):
    sd = _valid_sd(rng)
    del sd[key]
    with pytest.raises(ValueError, match=key):
        hinm.HiNMTensor.from_state_dict(sd)


def _lanes_reference(h):
    """Metadata by an independent route: rebuild each slot row in the compressed (kept-column)
    domain and let hinm.sptc_compress encode it."""
    slots, kc = h.values.shape
    kt = kc // h.n * h.m
    dense = np.zeros((slots, kt), h.values.dtype)
    groups = np.arange(kc) // h.n * h.m
    np.put_along_axis(dense, groups + h.indices.astype(np.int64), h.values, axis=1)
    return hinm.sptc_compress(dense, layout="lanes")[1]


@pytest.mark.parametrize("dtype,pattern,shape,has_meta", [
    ("float16", (2, 4), (64, 64), True), ("int8", (2, 4), (48, 256), True), ("float32", (1, 2), (64, 64), True),
    ("float32", (2, 4), (64, 64), False), ("float16", (2, 4), (40, 64), False), ("float16", (2, 4), (64, 48), False),
])
def test_sptc_meta(rng, dtype, pattern, shape, has_meta):
    w = (rng.standard_normal(shape) * 20 + 0.5).astype(dtype)
    w[w == 0] = 1  # no zero weights: the encoder's choice for empty chunks is torch's, not ours
    cfg = hinm.HiNMConfig(16, 0.5, *pattern)
    rp, co = random_perms(rng, shape[0], shape[1], 16)
    h = hinm.compress(w, cfg, perm={"row_perm": rp, "col_orders": co})
    if not has_meta:
        assert h.sptc_meta is None
        return
    assert h.sptc_meta.dtype == np.uint32
    np.testing.assert_array_equal(h.sptc_meta, _lanes_reference(h))
    back = hinm.HiNMTensor.from_state_dict(h.state_dict())
    np.testing.assert_array_equal(back.sptc_meta, h.sptc_meta)
    bad = h.sptc_meta.copy()
    bad.reshape(-1)[5] ^= 0x4
    with pytest.raises(ValueError, match="sptc_meta word 5"):
        hinm.HiNMTensor.from_state_dict(dict(h.state_dict(), sptc_meta=bad))
    with pytest.raises(ValueError, match="sptc_meta"):
        hinm.HiNMTensor.from_state_dict(dict(h.state_dict(), sptc_meta=h.sptc_meta.astype(np.int64)))
    with pytest.raises(ValueError, match="sptc_meta"):
        hinm.HiNMTensor.from_state_dict(dict(h.state_dict(), sptc_meta=h.sptc_meta[:-1]))


def test_sptc_meta_on_unsupported_shape_is_rejected(rng):
    sd = _valid_sd(rng)  # float32 2:4: no tensor-core metadata
    assert "sptc_meta" not in sd
    with pytest.raises(ValueError, match="sptc_meta"):
        hinm.HiNMTensor.from_state_dict(dict(sd, sptc_meta=np.zeros((1, 32), np.uint32)))
    with pytest.raises(TypeError):
        hinm.HiNMTensor.from_state_dict([1, 2])


@needs_torch
def test_sptc_meta_torch_bfloat16(rng):
    import torch

    w = torch.randn(64, 64, generator=torch.Generator().manual_seed(1), dtype=torch.float32).to(torch.bfloat16)
    h = hinm.compress(w, "hinm:v32:0.5:2:4")
    assert h.sptc_meta is not None and h.sptc_meta.dtype == torch.uint32
    back = hinm.HiNMTensor.from_state_dict(h.state_dict())
    assert torch.equal(back.to_dense(), h.to_dense())


def test_validate_names_the_bad_field(rng):
    sd = _valid_sd(rng)
    _poke("col_idx", (1, 3), 99)(sd)
    h = hinm.HiNMTensor(sd["values"], sd["indices"], sd["col_idx"], sd["row_perm"], (70, 24),
                        hinm.HiNMConfig(32, 0.5, 2, 4))
    for call in (h.validate, h.to_dense):
        with pytest.raises(ValueError, match=r"col_idx\[1\]\[3\]"):
            call()
    with pytest.raises(ValueError, match="values"):
        hinm.HiNMTensor(None, sd["indices"], sd["col_idx"], sd["row_perm"], (70, 24), h.config).validate()
    with pytest.raises(ValueError, match="config"):
        hinm.HiNMTensor(sd["values"], sd["indices"], sd["col_idx"], sd["row_perm"], (70, 24), "2:4").validate()


@needs_cuda
def test_cuda_resident_weight_compresses_on_host_and_comes_back():
    import torch

    w = torch.randn(64, 64, dtype=torch.float16)
    h_cpu = hinm.compress(w, "hinm:v32:0.5:2:4")
    h = hinm.compress(w.cuda(), "hinm:v32:0.5:2:4")
    assert h.values.is_cuda and h.indices.is_cuda and h.sptc_meta.is_cuda
    dense = h.to_dense()
    assert dense.is_cuda and torch.equal(dense.cpu(), h_cpu.to_dense())
    h.validate()
