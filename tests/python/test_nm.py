"""N:M masks and the NMTensor container against a slow numpy reference."""

import numpy as np
import pytest

import hinm

from conftest import needs_torch

PATTERNS = [(1, 2), (2, 4), (1, 4), (1, 8), (2, 8), (4, 8), (3, 16)]


def ref_nm_mask(scores, n, m):
    """Keep the n largest of each group of m; ties to the lower index (stable sort on -score)."""
    g = scores.reshape(-1, m)
    order = np.argsort(-g, axis=1, kind="stable")[:, :n]
    mask = np.zeros(g.shape, bool)
    np.put_along_axis(mask, order, True, axis=1)
    return mask.reshape(scores.shape)


@pytest.mark.parametrize("n,m", PATTERNS)
def test_nm_mask_matches_reference(rng, n, m, threads):
    scores = rng.standard_normal((13, 5 * m)).astype(np.float32)
    scores[0, :m] = 1.0  # a group of ties
    np.testing.assert_array_equal(hinm.nm_mask(scores, n, m), ref_nm_mask(scores, n, m))


@pytest.mark.parametrize("n,m", PATTERNS)
@pytest.mark.parametrize("dtype", ["float32", "float16", "int8"])
def test_compress_roundtrip_bit_exact(rng, n, m, dtype):
    w = (rng.standard_normal((9, 3 * m)) * 20).astype(dtype)
    t = hinm.compress_nm(w, n, m)
    expect = np.where(ref_nm_mask(np.abs(w.astype(np.float32)), n, m), w, 0).astype(dtype)
    np.testing.assert_array_equal(t.to_dense().view(np.uint8), expect.view(np.uint8))
    assert t.values.shape == (9, 3 * n) and t.indices.dtype == np.uint8


def test_bad_inputs_raise(rng):
    w = rng.standard_normal((4, 8)).astype(np.float32)
    with pytest.raises(ValueError, match="n < m"):
        hinm.compress_nm(w, 4, 4)
    with pytest.raises(ValueError, match="multiple of m"):
        hinm.compress_nm(w[:, :6], 2, 4)
    with pytest.raises(TypeError, match="float64"):
        hinm.compress_nm(w.astype(np.float64), 2, 4)
    bad = w.copy()
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        hinm.nm_mask(bad, 2, 4)


@needs_torch
def test_torch_in_torch_out_bfloat16():
    import torch

    w = torch.randn(8, 16, dtype=torch.bfloat16)
    t = hinm.compress_nm(w, 2, 4)
    assert isinstance(t.values, torch.Tensor) and t.values.dtype == torch.bfloat16
    keep = torch.from_numpy(ref_nm_mask(w.float().abs().numpy(), 2, 4))
    assert torch.equal(t.to_dense(), torch.where(keep, w, torch.zeros_like(w)))
