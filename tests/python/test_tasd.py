"""TASD series against a slow numpy reference of greedy extraction."""

import numpy as np
import pytest

import hinm

from conftest import needs_torch

SERIES = ["2:4", "2:4+1:8", "4:8+1:16", "1:4+1:8+1:16", "2:8+2:8", "1:2+1:4"]


def ref_tasd(w, series, threshold=0.0):
    """Greedy extraction on the residual; taken elements are excluded (score -inf)."""
    w = np.where(np.abs(w.astype(np.float32)) < threshold, 0, w).astype(w.dtype)
    score = np.abs(w.astype(np.float64))
    terms = []
    for cfg in hinm.parse_series(series):
        n, m = cfg.n, cfg.m
        g = score.reshape(-1, m)
        order = np.argsort(-g, axis=1, kind="stable")[:, :n]
        mask = np.zeros(g.shape, bool)
        np.put_along_axis(mask, order, True, axis=1)
        mask = mask.reshape(w.shape)
        terms.append(np.where(mask & np.isfinite(score), w, 0).astype(w.dtype))
        score = np.where(mask, -np.inf, score)
    return terms


def groups_ok(dense, n, m):
    return bool(((dense.reshape(-1, m) != 0).sum(axis=1) <= n).all())


@pytest.mark.parametrize("series", SERIES)
@pytest.mark.parametrize("dtype", ["float32", "float16", "int8"])
def test_terms_match_reference_and_patterns(rng, series, dtype, threads):
    w = (rng.standard_normal((11, 48)) * 20).astype(dtype)
    s = hinm.tasd(w, series)
    assert s.series == series and len(s) == len(hinm.parse_series(series))
    for term, ref, cfg in zip(s.terms, ref_tasd(w, series), s.configs):
        term.validate()
        d = term.to_dense()
        assert groups_ok(d, cfg.n, cfg.m)
        np.testing.assert_array_equal(d.view(np.uint8), ref.view(np.uint8))
    assert s.density == pytest.approx(hinm.series_density(series))


@pytest.mark.parametrize("series", SERIES)
def test_series_error_never_exceeds_first_term(rng, series):
    w = rng.standard_normal((16, 64)).astype(np.float32)
    full = hinm.tasd(w, series)
    first = hinm.tasd(w, hinm.parse_series(series)[:1])
    assert full.error(w) <= first.error(w) + 1e-12
    errs = [hinm.tasd(w, hinm.parse_series(series)[:i]).error(w) for i in range(1, len(full) + 1)]
    assert all(b <= a + 1e-12 for a, b in zip(errs, errs[1:]))  # adding a term never hurts


@pytest.mark.parametrize("a,b", [("1:8+1:8", "2:8"), ("2:4+1:4", "3:4"), ("1:16+3:16", "4:16")])
def test_same_m_collapse_is_bit_exact(rng, a, b):
    w = rng.standard_normal((9, 32)).astype(np.float32)
    w[0, :8] = 0.5  # ties
    w[1, :8] = 0.0  # an all-zero group
    lhs, rhs = hinm.tasd(w, a).to_dense(), hinm.tasd(w, b).to_dense()
    np.testing.assert_array_equal(lhs.view(np.uint32), rhs.view(np.uint32))


def test_two_halves_are_exact_and_scores_steer(rng):
    w = rng.standard_normal((4, 16)).astype(np.float32)
    assert hinm.tasd(w, "2:4+2:4").error(w) == 0.0
    scores = -np.abs(w)  # prefer the smallest
    small = hinm.tasd(w, "1:4", scores=scores).to_dense()
    assert groups_ok(small, 1, 4)
    np.testing.assert_array_equal(np.abs(small).reshape(-1, 4).max(axis=1), np.abs(w).reshape(-1, 4).min(axis=1))


def test_state_dict_round_trip(rng):
    w = rng.standard_normal((6, 32)).astype(np.float16)
    s = hinm.tasd(w, "2:4+1:8")
    back = hinm.TASDSeries.from_state_dict(s.state_dict())
    assert back.series == "2:4+1:8" and back.shape == (6, 32)
    np.testing.assert_array_equal(back.to_dense(), s.to_dense())
    bad = dict(s.state_dict())
    bad["term1.pattern"] = np.array([1, 4], np.int64)
    with pytest.raises(ValueError):
        hinm.TASDSeries.from_state_dict(bad)
    with pytest.raises(ValueError, match="format version"):
        hinm.TASDSeries.from_state_dict({**s.state_dict(), "format_version": np.array([9])})


def test_linear_equals_dense_reference(rng):
    w = rng.standard_normal((24, 32)).astype(np.float32)
    s = hinm.tasd(w, "2:4+1:8")
    x = rng.standard_normal((2, 5, 32)).astype(np.float32)
    b = rng.standard_normal(24).astype(np.float32)
    y = hinm.linear(x, s, b)  # hinm.linear dispatches a TASDSeries to tasd_linear
    np.testing.assert_allclose(y, x @ s.to_dense().T + b, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(y, hinm.tasd_linear(x, s, b))
    acc = y.copy()
    hinm.linear(x, s, b, out=acc, accumulate=True)
    np.testing.assert_allclose(acc, 2 * y, rtol=1e-5, atol=1e-5)
    out = np.full((10, 24), 7.0, np.float32)  # a caller's buffer: every term lands in it
    hinm.tasd_linear(x.reshape(10, 32), s, out=out)
    np.testing.assert_allclose(out, x.reshape(10, 32) @ s.to_dense().T, rtol=1e-5, atol=1e-5)
    s16 = hinm.tasd(w.astype(np.float16), "2:4+1:8")  # other dtypes take the dense-term path
    np.testing.assert_allclose(hinm.tasd_linear(x.astype(np.float16), s16).astype(np.float32),
                               x @ s16.to_dense().astype(np.float32).T, rtol=2e-2, atol=5e-2)


@pytest.mark.parametrize("threshold", [0.0, 0.5])
def test_activation_decomposition_and_gemm(rng, threshold):
    x = rng.standard_normal((3, 7, 64)).astype(np.float32)
    w = rng.standard_normal((10, 64)).astype(np.float32)
    xs = hinm.tasd_activation(x, "2:4+1:8", threshold=threshold)
    assert xs.shape == (21, 64)
    refs = ref_tasd(x.reshape(21, 64), "2:4+1:8", threshold)
    for term, ref in zip(xs.terms, refs):
        np.testing.assert_array_equal(term.to_dense(), ref)
    xd = xs.to_dense()
    if threshold:
        assert not (np.abs(xd[xd != 0]) < threshold).any()
        assert hinm.pseudo_density(x, threshold) < 1.0
    y = hinm.tasd_activation_linear(x, w, "2:4+1:8", threshold=threshold)
    np.testing.assert_allclose(y.reshape(21, 10), xd @ w.T, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bad", ["", "2:4+", "+1:8", "2:4++1:8", "2:4+x", "4:4", "2:4+hinm:v8:0.5:2:4", 7, []])
def test_bad_series_raise(bad):
    with pytest.raises((ValueError, TypeError)):
        hinm.parse_series(bad)


def test_shape_mismatches_raise(rng):
    w = rng.standard_normal((4, 24)).astype(np.float32)
    with pytest.raises(ValueError, match="multiple of m=16"):
        hinm.tasd(w, "2:4+1:16")
    with pytest.raises(ValueError, match="2-D"):
        hinm.tasd(w.reshape(-1), "2:4")
    with pytest.raises(ValueError, match="shape"):
        hinm.tasd(w, "2:4", scores=np.ones((4, 20), np.float32))
    with pytest.raises(ValueError, match="threshold"):
        hinm.tasd(w, "2:4", threshold=-1)
    s = hinm.tasd(w, "2:4")
    with pytest.raises(ValueError, match="last axis"):
        hinm.tasd_linear(np.ones((3, 20), np.float32), s)
    with pytest.raises(ValueError, match="shape"):
        s.error(np.ones((4, 20)))
    with pytest.raises(ValueError, match="last axis"):
        hinm.tasd_activation_linear(np.ones((3, 20), np.float32), w, "2:4")
    bad = w.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        hinm.tasd(bad, "2:4")


@needs_torch
def test_torch_in_torch_out():
    import torch

    w = torch.randn(8, 32, dtype=torch.bfloat16)
    s = hinm.tasd(w, "2:4+1:8")
    assert all(isinstance(t.values, torch.Tensor) for t in s.terms)
    assert s.error(w) < hinm.tasd(w, "2:4").error(w)
    x = torch.randn(5, 32)
    y = hinm.tasd_linear(x, hinm.tasd(w.float(), "2:4+1:8"))
    torch.testing.assert_close(y, x @ hinm.tasd(w.float(), "2:4+1:8").to_dense().T)


def test_hinm_first_term(rng):
    w = rng.standard_normal((16, 64)).astype(np.float32)
    s = hinm.tasd(w, "hinm:v8:0.5:2:4+1:8")
    assert isinstance(s.terms[0], hinm.HiNMTensor) and isinstance(s.terms[1], hinm.NMTensor)
    first = s.terms[0].to_dense()
    second = s.terms[1].to_dense()
    assert not ((first != 0) & (second != 0)).any()  # the residual term never re-takes an element
    residual = np.where(first != 0, 0, w)
    np.testing.assert_array_equal(second, ref_tasd(residual, "1:8")[0])
    assert s.density == pytest.approx(0.25 + 0.125)
    assert s.error(w) < hinm.tasd(w, "hinm:v8:0.5:2:4").error(w)
    back = hinm.TASDSeries.from_state_dict(s.state_dict())
    np.testing.assert_array_equal(back.to_dense(), s.to_dense())
    x = rng.standard_normal((3, 64)).astype(np.float32)
    np.testing.assert_allclose(hinm.tasd_linear(x, s), x @ s.to_dense().T, rtol=1e-5, atol=1e-5)
