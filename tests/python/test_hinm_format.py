"""HiNM masks and the HiNMTensor container against a slow numpy reference."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hinm
from conftest import needs_torch


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
