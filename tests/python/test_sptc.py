"""Sparse-tensor-core compression against the golden vectors, torch's CPU converter and an
independent numpy reading of the lane-word layout."""

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hinm
from hinm._arrays import to_numpy
from conftest import needs_torch

DATA = Path(__file__).resolve().parents[1] / "data" / "sptc"
GOLDEN = ["f16_32x64", "bf16_64x128", "i8_32x128", "f32_32x32"]


def load(name):
    z = dict(np.load(DATA / f"{name}.npz"))
    if name.startswith("bf16"):
        import torch

        z["dense"] = torch.from_numpy(z["dense"].view(np.int16)).view(torch.bfloat16)
    return z


def ref_codes_from_lanes(words, rows, cols, dtype):
    """Per-chunk 4-bit codes read back from lane words with the formulas of sptc-metadata.md 2.2(6)."""
    chunk = 2 if dtype == "float32" else 4
    codes = np.zeros((rows, cols // chunk), np.uint32)
    flat = words.reshape(-1)
    for r in range(rows):
        for q in range(cols // chunk):
            if dtype == "int8":
                block, lane, shift = (q // 16) * (rows // 16) + r // 16, 4 * (r % 8) + 2 * ((q % 16) // 8) + (r % 16) // 8, 4 * (q % 8)
            else:
                ii, qq = r % 32, q % 8
                block = (q // 8) * (rows // 32) + r // 32
                lane, shift = 4 * (ii % 8) + 2 * (ii // 16) + qq // 4, 16 * ((ii // 8) & 1) + 4 * (qq % 4)
            codes[r, q] = (flat[block * 32 + lane] >> shift) & 0xF
    return codes


@needs_torch
@pytest.mark.parametrize("name", GOLDEN)
def test_golden_vectors_bit_exact(name):
    z = load(name)
    values, meta = hinm.sptc_compress(z["dense"], layout="cutlass")
    _, lanes = hinm.sptc_compress(z["dense"], layout="lanes")
    np.testing.assert_array_equal(to_numpy(values).view(np.uint8), z["values"].view(np.uint8))
    np.testing.assert_array_equal(to_numpy(meta).view(np.uint8), z["meta_reordered"].view(np.uint8))
    np.testing.assert_array_equal(to_numpy(lanes), z["lane_words"])
    dense = to_numpy(z["dense"]) if not hasattr(z["dense"], "numpy") else z["dense"]
    for layout, m in (("cutlass", meta), ("lanes", lanes)):
        back = hinm.sptc_decompress(values, m, layout=layout)
        np.testing.assert_array_equal(to_numpy(back).view(np.uint8), to_numpy(dense).view(np.uint8))
    # C = A · B with the golden right-hand side (exact small integers)
    a = to_numpy(hinm.sptc_decompress(values, lanes, layout="lanes")) if name != "bf16_64x128" else None
    if a is not None:
        np.testing.assert_array_equal(a.astype(np.float32) @ z["B"], z["C"])


def test_degenerate_chunks():
    z = load("f16_degenerate_32x64")
    dense, mask = z["dense"], z["mask"].astype(bool)
    over = mask.reshape(32, -1, 4).sum(-1) > 2
    with pytest.raises(ValueError, match="more than 2 nonzeros"):
        hinm.sptc_compress(dense)
    clean = dense.copy().reshape(32, -1, 4)
    clean[over] = 0
    clean = clean.reshape(32, 64)
    values, lanes = hinm.sptc_compress(clean, layout="lanes")
    codes = ref_codes_from_lanes(lanes, 32, 64, "float16")
    assert ((codes & 3) < (codes >> 2)).all(), "every code must be ascending"
    # chunks with <= 2 nonzeros are encoded exactly as torch 2.13 does (the golden nibbles)
    np.testing.assert_array_equal(codes[~over], z["nibbles"][~over])
    np.testing.assert_array_equal(hinm.sptc_decompress(values, lanes, layout="lanes"), clean)


def _random_24(rng, rows, cols, dtype, n=2, m=4):
    x = rng.integers(-9, 10, size=(rows, cols)).astype(np.float32)
    x[x == 0] = 1
    g = x.reshape(rows, -1, m)
    drop = np.argsort(rng.random(g.shape), axis=-1)[..., n:]
    np.put_along_axis(g, drop, 0, axis=-1)
    if rng.random() < 0.5:  # some chunks with fewer nonzeros
        g[rng.random(g.shape) < 0.2] = 0
    return g.reshape(rows, cols).astype(dtype)


@needs_torch
@pytest.mark.parametrize("dtype,shape", [("float16", (32, 32)), ("float16", (64, 96)), ("bfloat16", (96, 64)),
                                         ("int8", (16, 64)), ("int8", (48, 192)), ("float32", (32, 16)),
                                         ("float32", (64, 48))])
def test_matches_torch_cpu_converter(rng, dtype, shape):
    import torch
    from torch.sparse._semi_structured_conversions import sparse_semi_structured_from_dense_cutlass as torch_conv

    tdt = getattr(torch, dtype)
    if dtype == "float32":
        x = torch.from_numpy(_random_24(rng, *shape, "float32", n=1, m=2))
    else:
        x = torch.from_numpy(_random_24(rng, *shape, "float32")).to(tdt)
    ref_values, ref_meta = torch_conv(x)
    values, meta = hinm.sptc_compress(x, layout="cutlass")
    assert torch.equal(values, ref_values)
    assert meta.dtype == ref_meta.dtype and torch.equal(meta, ref_meta)
    assert torch.equal(hinm.sptc_decompress(values, meta), x)


@settings(max_examples=40, deadline=None)
@given(dtype=st.sampled_from(["float16", "int8", "float32"]), rb=st.integers(1, 3), cb=st.integers(1, 3),
       seed=st.integers(0, 2**31 - 1))
def test_property_roundtrip_both_layouts(dtype, rb, cb, seed):
    rng = np.random.default_rng(seed)
    rows, cols = rb * 32, cb * {"float16": 32, "int8": 64, "float32": 16}[dtype]
    x = _random_24(rng, rows, cols, dtype, *((1, 2) if dtype == "float32" else (2, 4)))
    for layout in ("cutlass", "lanes"):
        values, meta = hinm.sptc_compress(x, layout=layout)
        np.testing.assert_array_equal(hinm.sptc_decompress(values, meta, layout=layout), x)
    codes = ref_codes_from_lanes(hinm.sptc_compress(x, layout="lanes")[1], rows, cols, dtype)
    if dtype == "float32":
        assert np.isin(codes, [0x4, 0xE]).all()
    else:
        assert ((codes & 3) < (codes >> 2)).all()


def test_metadata_from_positions_matches_compression(rng):
    x = _random_24(rng, 64, 64, "float16")
    x[x == 0] = 0
    t = hinm.compress_nm(x, 2, 4)
    # compress_nm picks positions by |w|; chunks with two nonzeros give the same codes as sptc_compress
    full = np.where(x != 0, x, np.float16(0.5)).astype(np.float16)  # make every chunk exactly 2:4
    full = hinm.compress_nm(full, 2, 4).to_dense()
    values, lanes = hinm.sptc_compress(full, layout="lanes")
    pos = hinm.compress_nm(full, 2, 4).indices
    np.testing.assert_array_equal(hinm.sptc.sptc_metadata_from_positions(pos, "float16", 64), lanes)
    assert t.indices.shape == (64, 32)


@needs_torch
def test_semi_structured_tensor_round_trip():
    import torch

    x = torch.from_numpy(_random_24(np.random.default_rng(0), 32, 64, "float32")).half()
    s = hinm.to_semi_structured(x)
    assert torch.equal(s.to_dense(), x)  # torch decodes hinm's metadata
    assert torch.equal(hinm.from_semi_structured(s), x)
    with pytest.raises(TypeError, match="SparseSemiStructured"):
        hinm.from_semi_structured(x)


def test_bad_inputs(rng):
    x = _random_24(rng, 32, 64, "float16")
    with pytest.raises(ValueError, match="multiple of 32"):
        hinm.sptc_compress(x[:16])
    with pytest.raises(ValueError, match="multiple of 32"):
        hinm.sptc_compress(x[:, :48])
    with pytest.raises(TypeError, match="float64"):
        hinm.sptc_compress(x.astype(np.float64))
    with pytest.raises(ValueError, match="layout"):
        hinm.sptc_compress(x, layout="cusparselt")
    dense = x.copy()
    dense[5, 8:12] = 1  # four nonzeros in a 2:4 chunk
    with pytest.raises(ValueError, match="row 5, chunk 2"):
        hinm.sptc_compress(dense)
    f = np.ones((32, 16), np.float32)
    with pytest.raises(ValueError, match="1:2 pair"):
        hinm.sptc_compress(f)
    values, meta = hinm.sptc_compress(x)
    with pytest.raises(ValueError, match="metadata for layout"):
        hinm.sptc_decompress(values, meta[:, :2])
    bad = meta.copy()
    bad[0, 0] = 0  # code 0x0 repeats an index: illegal
    with pytest.raises(ValueError, match="illegal metadata code"):
        hinm.sptc_decompress(values, bad)
    with pytest.raises(ValueError, match="not ascending"):
        hinm.sptc.sptc_metadata_from_positions(np.full((32, 32), 3, np.uint8), "float16", 64)
