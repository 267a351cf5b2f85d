"""Sparse-tensor-core format: golden vectors, torch's CUTLASS converter, round trips, interop, errors."""

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hinm

from conftest import needs_torch

DATA = Path(__file__).resolve().parents[1] / "data" / "sptc"
CASES = ["f16_32x64", "bf16_64x128", "i8_32x128", "f32_32x32"]
DTYPES = ["float16", "bfloat16", "int8", "float32"]
# dtype -> (row multiple, K multiple, chunk width)
GEOM = {"float16": (32, 32, 4), "bfloat16": (32, 32, 4), "int8": (16, 64, 4), "float32": (32, 16, 2)}


def load(name):
    return dict(np.load(DATA / f"{name}.npz"))


def torch_dense(z, name):
    import torch

    d = torch.from_numpy(z["dense"].view(np.int16) if name.startswith("bf16") else z["dense"])
    return d.view(torch.bfloat16) if name.startswith("bf16") else d


def bits(x):
    """Raw bit patterns as a numpy array (bf16 -> uint16), for bit-exact comparisons."""
    import torch

    if isinstance(x, torch.Tensor):
        x = x.cpu()
        if x.dtype in (torch.bfloat16, torch.float16):
            return x.view(torch.int16).numpy().view(np.uint16)
        if x.dtype == torch.float32:
            return x.view(torch.int32).numpy().view(np.uint32)
        return x.numpy()
    x = np.asarray(x)
    return x.view({2: np.uint16, 4: np.uint32, 1: np.uint8}[x.itemsize]) if x.dtype.kind == "f" else x


def canon(x):
    """bits(x) with -0.0 read as +0.0: an unstored -0.0 comes back as +0.0 (it counts as zero)."""
    b = bits(x)
    if b.dtype == np.uint16:
        return np.where(b == 0x8000, np.uint16(0), b)
    if b.dtype == np.uint32:
        return np.where(b == 0x80000000, np.uint32(0), b)
    return b


def random_sparse(rng, dtype, m, k, max_nnz=None, p_full=0.7, integers=False):
    """Random dense [m, k] with at most 2 (f32: 1) nonzeros per chunk, some chunks emptier, and
    some -0.0 in floats; returned as numpy (or torch for bfloat16)."""
    chunk = GEOM[dtype][2]
    keep = 1 if dtype == "float32" else 2
    keep = keep if max_nnz is None else max_nnz
    scores = rng.random((m, k // chunk, chunk))
    order = np.argsort(-scores, axis=-1)
    nnz = rng.integers(0, keep + 1, size=(m, k // chunk, 1))
    nnz[rng.random(nnz.shape) < p_full] = keep
    mask = np.zeros((m, k // chunk, chunk), bool)
    np.put_along_axis(mask, order, np.arange(chunk)[None, None, :] < nnz, axis=-1)
    vals = rng.integers(-100, 101, size=(m, k)) if dtype == "int8" else rng.standard_normal((m, k)) * 10
    vals = np.round(vals) if integers else vals
    vals[vals == 0] = 3
    dense = np.where(mask.reshape(m, k), vals, 0)
    if dtype == "int8":
        return dense.astype(np.int8)
    if dtype == "bfloat16":
        import torch

        out = torch.from_numpy(dense.astype(np.float32)).to(torch.bfloat16)
        out[torch.from_numpy(rng.random((m, k)) < 0.05) & (out == 0)] = -0.0
        return out
    dense = dense.astype(dtype)
    dense[(rng.random((m, k)) < 0.05) & (dense == 0)] = -0.0
    return dense


# ---- golden vectors ----------------------------------------------------------------------------------

@needs_torch
@pytest.mark.parametrize("name", CASES)
def test_golden_bit_exact(name, threads):
    z = load(name)
    dense = torch_dense(z, name)
    values, meta = hinm.sptc_compress(dense, layout="cutlass")
    assert np.array_equal(bits(values), bits(z["values"]))
    assert str(meta.dtype) == ("torch.int32" if name.startswith("i8") else "torch.int16")
    assert tuple(meta.shape) == z["meta_reordered"].shape
    assert np.array_equal(bits(meta).view(z["meta_reordered"].dtype), z["meta_reordered"])
    values2, lanes = hinm.sptc_compress(dense, layout="lanes")
    assert str(lanes.dtype) == "torch.uint32"
    assert np.array_equal(bits(values2), bits(z["values"]))
    assert np.array_equal(bits(lanes), z["lane_words"])
    back = hinm.sptc_decompress(values, meta, layout="cutlass")
    assert np.array_equal(bits(back), bits(z["dense"]))
    assert np.array_equal(bits(hinm.sptc_decompress(values2, lanes, layout="lanes")), bits(z["dense"]))


@pytest.mark.parametrize("name", ["f16_32x64", "i8_32x128", "f32_32x32"])
def test_golden_numpy_in_numpy_out(name):
    z = load(name)
    values, lanes = hinm.sptc_compress(z["dense"], layout="lanes")
    assert isinstance(values, np.ndarray) and values.dtype == z["dense"].dtype
    assert lanes.dtype == np.uint32 and np.array_equal(lanes, z["lane_words"])
    assert np.array_equal(bits(values), bits(z["values"]))
    _, meta = hinm.sptc_compress(z["dense"])
    assert meta.dtype == (np.int32 if name.startswith("i8") else np.int16)
    assert np.array_equal(meta.view(z["meta_reordered"].dtype), z["meta_reordered"])
    assert np.array_equal(bits(hinm.sptc_decompress(values, lanes, layout="lanes")), bits(z["dense"]))
    # metadata given as the golden unsigned view is accepted too
    assert np.array_equal(bits(hinm.sptc_decompress(values, z["meta_reordered"])), bits(z["dense"]))


@pytest.mark.parametrize("name", CASES)
def test_golden_metadata_from_positions(name):
    z = load(name)
    kind = {"f16": "float16", "bf1": "bfloat16", "i8_": "int8", "f32": "float32"}[name[:3]]
    dense = z["dense"]
    m, k = dense.shape
    group = GEOM[kind][2]
    nz = (dense != 0).reshape(m, k // group, group)
    pos = np.nonzero(nz)[2].astype(np.uint8).reshape(m, k // 2)
    lanes = hinm.sptc_metadata_from_positions(pos, layout="lanes", dtype=kind)
    assert np.array_equal(lanes, z["lane_words"])
    meta = hinm.sptc_metadata_from_positions(pos, layout="cutlass", dtype=kind)
    assert np.array_equal(meta.view(z["meta_reordered"].dtype), z["meta_reordered"])


def test_golden_manifest_first_block():
    manifest = json.loads((DATA / "manifest.json").read_text())
    z = load("f16_32x64")
    _, lanes = hinm.sptc_compress(z["dense"], layout="lanes")
    assert [f"0x{int(w):08x}" for w in lanes[0]] == manifest["cases"]["f16_32x64"]["first_block_lane_words_hex"]
    assert lanes[0, 0] == 0x4DDD9EE9 and lanes[0, 1] == 0xD484CD99 and lanes[0, 2] == 0x4899849D


def test_golden_degenerate():
    z = load("f16_degenerate_32x64")
    dense, mask = z["dense"], z["mask"].astype(bool)
    chunks = mask.reshape(32, 16, 4)
    over = chunks.sum(-1) > 2
    r, q = np.argwhere(over)[0]
    with pytest.raises(ValueError, match=f"row {r}, chunk {q} "):
        hinm.sptc_compress(dense)
    # keep the first two nonzeros of each over-full chunk
    keep = np.cumsum(chunks, axis=-1) <= 2
    pruned = np.where((chunks & keep).reshape(32, 64), dense, np.float16(0))
    values, lanes = hinm.sptc_compress(pruned, layout="lanes")
    assert np.array_equal(hinm.sptc_decompress(values, lanes, layout="lanes"), pruned)
    ours = nibbles_from_raw(raw_from_lanes(lanes, 32, 64))
    golden = z["nibbles"]
    i0, i1 = ours & 3, ours >> 2
    assert (i0 < i1).all()  # ordered_metadata legal everywhere
    lossless = ~over
    assert lossless.sum() > 300
    assert np.array_equal(ours[lossless], golden[lossless])  # same choice as torch where torch is lossless


def raw_from_lanes(lanes, m, k):
    """Per-row packed 16-bit meta from lane words, by the closed form of sptc-metadata.md 2.2(6)
    (independent numpy implementation)."""
    ncols = k // 16
    raw = np.zeros((m, ncols), np.uint16)
    for i in range(m):
        for j in range(ncols):
            ii = i % 32
            block = (j // 2) * (m // 32) + i // 32
            lane = 4 * (ii % 8) + 2 * (ii // 16) + j % 2
            raw[i, j] = (int(lanes[block, lane]) >> (16 * ((ii // 8) & 1))) & 0xFFFF
    return raw


def nibbles_from_raw(raw):
    m, ncols = raw.shape
    out = np.zeros((m, ncols * 4), np.uint8)
    for s in range(4):
        out[:, s::4] = (raw >> (4 * s)) & 0xF
    return out


# ---- against torch's CPU converter -------------------------------------------------------------------

SHAPES = {
    "float16": [(32, 32), (64, 96), (96, 64), (32, 160)],
    "bfloat16": [(32, 32), (64, 64), (32, 96)],
    "int8": [(16, 64), (48, 128), (32, 192)],
    "float32": [(32, 16), (64, 48), (32, 80)],
}


@needs_torch
@pytest.mark.parametrize("dtype", DTYPES)
def test_matches_torch_cutlass_converter(dtype, rng):
    import torch
    from torch.sparse._semi_structured_conversions import (sparse_semi_structured_from_dense_cutlass,
                                                           sparse_semi_structured_to_dense_cutlass)

    for m, k in SHAPES[dtype]:
        dense = random_sparse(rng, dtype, m, k)
        td = dense if isinstance(dense, torch.Tensor) else torch.from_numpy(dense)
        ref_vals, ref_meta = sparse_semi_structured_from_dense_cutlass(td)
        values, meta = hinm.sptc_compress(td)
        assert meta.dtype == ref_meta.dtype and meta.shape == ref_meta.shape, (dtype, m, k)
        assert torch.equal(meta, ref_meta), (dtype, m, k)
        assert np.array_equal(bits(values), bits(ref_vals)), (dtype, m, k)
        _, lanes = hinm.sptc_compress(td, layout="lanes")
        assert np.array_equal(bits(lanes).reshape(-1), bits(ref_meta).reshape(-1).view(np.uint32))
        # torch's decompressor reads our metadata, ours reads torch's
        # torch's decompressor reads our metadata as its own (for float32 it is not bit-exact itself:
        # it scatters float halves, which canonicalises half-NaN bit patterns), ours reads torch's
        assert np.array_equal(bits(sparse_semi_structured_to_dense_cutlass(values, meta)),
                              bits(sparse_semi_structured_to_dense_cutlass(ref_vals, ref_meta)))
        assert np.array_equal(canon(hinm.sptc_decompress(ref_vals, ref_meta)), canon(td))


# ---- properties ---------------------------------------------------------------------------------------

@st.composite
def sparse_case(draw):
    dtype = draw(st.sampled_from(["float16", "int8", "float32"] + (["bfloat16"] if _has_torch() else [])))
    ra, ka, _ = GEOM[dtype]
    m = ra * draw(st.integers(0, 3))
    k = ka * draw(st.integers(0, 3))
    seed = draw(st.integers(0, 2**32 - 1))
    return dtype, m, k, seed


def _has_torch():
    import importlib.util

    return importlib.util.find_spec("torch") is not None


@settings(max_examples=40, deadline=None)
@given(sparse_case(), st.sampled_from(["cutlass", "lanes"]))
def test_round_trip_property(case, layout):
    dtype, m, k, seed = case
    dense = random_sparse(np.random.default_rng(seed), dtype, m, k)
    values, meta = hinm.sptc_compress(dense, layout=layout)
    shape, mdt = hinm.sptc_metadata_shape(dtype, m, k, layout)
    assert tuple(meta.shape) == shape and str(meta.dtype).removeprefix("torch.") == mdt
    assert tuple(values.shape) == (m, k // 2)
    assert np.array_equal(canon(hinm.sptc_decompress(values, meta, layout=layout)), canon(dense))
    other = "lanes" if layout == "cutlass" else "cutlass"
    converted = hinm.sptc_convert_layout(meta, dtype, (m, k), layout, other)
    assert np.array_equal(canon(hinm.sptc_decompress(values, converted, layout=other)), canon(dense))


@settings(max_examples=30, deadline=None)
@given(sparse_case())
def test_positions_path_equals_dense_path(case):
    """NMTensor (2:4, or 1:2 for float32) -> metadata from positions decodes to the same dense matrix;
    with exactly full chunks the metadata bytes are identical to compressing the dense matrix."""
    dtype, m, k, seed = case
    rng = np.random.default_rng(seed)
    w = random_sparse(rng, dtype, m, k, max_nnz=2 if dtype != "float32" else 1)
    n, mm = (1, 2) if dtype == "float32" else (2, 4)
    t = hinm.compress_nm(w, n, mm)
    for layout in ("cutlass", "lanes"):
        meta = hinm.sptc_metadata_from_positions(t.indices, layout=layout, dtype=dtype)
        assert np.array_equal(bits(hinm.sptc_decompress(t.values, meta, layout=layout)), bits(t.to_dense()))
    full = random_sparse(rng, dtype, m, k, p_full=1.0)
    t = hinm.compress_nm(full, n, mm)
    _, ref = hinm.sptc_compress(t.to_dense(), layout="lanes")
    ours = hinm.sptc_metadata_from_positions(t.indices, layout="lanes", dtype=dtype)
    assert np.array_equal(bits(ours), bits(ref))


# ---- torch.sparse interop --------------------------------------------------------------------------

@needs_torch
@pytest.mark.parametrize("dtype", DTYPES)
def test_torch_semi_structured_round_trip(dtype, rng):
    import torch
    from torch.sparse import SparseSemiStructuredTensorCUTLASS

    m, k = {"float16": (32, 64), "bfloat16": (64, 64), "int8": (16, 128), "float32": (32, 32)}[dtype]
    dense = random_sparse(rng, dtype, m, k, integers=True)  # torch's float32 to_dense is exact only for these
    td = dense if isinstance(dense, torch.Tensor) else torch.from_numpy(dense)
    for layout in ("cutlass", "lanes"):
        values, meta = hinm.sptc_compress(td, layout=layout)
        t = hinm.sptc_to_torch(values, meta, layout=layout)
        assert isinstance(t, SparseSemiStructuredTensorCUTLASS) and tuple(t.shape) == (m, k)
        assert np.array_equal(canon(t.to_dense()), canon(td))
        v2, meta2 = hinm.sptc_from_torch(t, layout=layout)
        assert v2.data_ptr() == values.data_ptr()  # no copy
        assert torch.equal(meta2, meta)
    # numpy input converts
    if dtype != "bfloat16":
        vn, mn = hinm.sptc_compress(dense)
        assert np.array_equal(canon(hinm.sptc_to_torch(vn, mn).to_dense()), canon(td))


@needs_torch
def test_torch_interop_errors(rng):
    import torch

    values, meta = hinm.sptc_compress(random_sparse(rng, "float16", 32, 32))
    with pytest.raises(ValueError, match="at least 32x64"):
        hinm.sptc_to_torch(values, meta)
    with pytest.raises(TypeError, match="SparseSemiStructuredTensorCUTLASS"):
        hinm.sptc_from_torch(torch.zeros(4, 4))
    with pytest.raises(ValueError, match="layout"):
        hinm.sptc_from_torch(torch.zeros(4, 4), layout="cusparselt")


# ---- bad inputs --------------------------------------------------------------------------------------

def test_shape_errors():
    with pytest.raises(ValueError, match="multiple of 32 rows"):
        hinm.sptc_compress(np.zeros((16, 32), np.float16))
    with pytest.raises(ValueError, match="multiple of 16 rows"):
        hinm.sptc_compress(np.zeros((8, 64), np.int8))
    with pytest.raises(ValueError, match="K=48 .*multiple of 32"):
        hinm.sptc_compress(np.zeros((32, 48), np.float16))
    with pytest.raises(ValueError, match="K=32 .*multiple of 64"):
        hinm.sptc_compress(np.zeros((16, 32), np.int8))
    with pytest.raises(ValueError, match="K=8 .*multiple of 16"):
        hinm.sptc_compress(np.zeros((32, 8), np.float32))
    with pytest.raises(ValueError, match="2-D"):
        hinm.sptc_compress(np.zeros((32, 32, 1), np.float16))
    with pytest.raises(TypeError, match="float64 has no sparse-tensor-core format"):
        hinm.sptc_compress(np.zeros((32, 32), np.float64))
    with pytest.raises(TypeError, match="int32"):
        hinm.sptc_compress(np.zeros((32, 32), np.int32))
    with pytest.raises(ValueError, match="layout"):
        hinm.sptc_compress(np.zeros((32, 32), np.float16), layout="cusparselt")


@pytest.mark.parametrize("dtype,per_chunk", [("float16", 3), ("int8", 4), ("float32", 2)])
def test_too_many_nonzeros(dtype, per_chunk, threads):
    ra, ka, chunk = GEOM[dtype]
    m, k = 2 * ra, ka
    dense = np.zeros((m, k), dtype)
    # two bad chunks, in different row blocks: the first in row-major order is reported
    dense[ra + 3, chunk: chunk + per_chunk] = 1
    dense[5, 2 * chunk: 2 * chunk + per_chunk] = 1
    with pytest.raises(ValueError, match=f"row 5, chunk 2 .* has {per_chunk} nonzeros"):
        hinm.sptc_compress(dense)


def test_nan_counts_as_nonzero_and_negative_zero_as_zero():
    dense = np.zeros((32, 32), np.float16)
    dense[0, 0:2] = np.nan
    dense[0, 2] = -0.0
    values, meta = hinm.sptc_compress(dense)
    back = hinm.sptc_decompress(values, meta)
    assert np.isnan(back[0, :2]).all() and np.array_equal(bits(back[1:]), bits(dense[1:]))
    dense[0, 2] = np.nan
    with pytest.raises(ValueError, match="row 0, chunk 0"):
        hinm.sptc_compress(dense)


def test_decompress_errors():
    values, meta = hinm.sptc_compress(np.zeros((32, 32), np.float16))
    bad = meta.copy()
    bad.view(np.uint16)[...] = 0x1111  # code 0x1: descending pair (1, 0)
    with pytest.raises(ValueError, match="code 0x1 of row .* not a legal ordered 2:4 code"):
        hinm.sptc_decompress(values, bad)
    with pytest.raises(ValueError, match="shape"):
        hinm.sptc_decompress(values, meta[:, :1])
    with pytest.raises(TypeError, match="int16 or uint16"):
        hinm.sptc_decompress(values, meta.astype(np.int32))
    with pytest.raises(TypeError, match="int32 or uint32"):
        hinm.sptc_decompress(values, meta, layout="lanes")
    with pytest.raises(ValueError, match="shape \\(1, 32\\)"):
        hinm.sptc_decompress(values, np.zeros((2, 32), np.uint32), layout="lanes")
    with pytest.raises(ValueError, match="multiple of 32 rows"):
        hinm.sptc_decompress(values[:16], meta[:16])
    fv, fm = hinm.sptc_compress(np.zeros((32, 16), np.float32), layout="lanes")
    fm[0, 0] = 0x44444448  # 0x8 is a 2:4 code, illegal for tf32
    with pytest.raises(ValueError, match="code 0x8 .* 1:2 code \\(0x4 or 0xE\\)"):
        hinm.sptc_decompress(fv, fm, layout="lanes")


def test_positions_errors():
    pos = np.tile(np.array([0, 1], np.uint8), (32, 16))
    with pytest.raises(TypeError, match="uint8"):
        hinm.sptc_metadata_from_positions(pos.astype(np.int32))
    with pytest.raises(TypeError, match="float64"):
        hinm.sptc_metadata_from_positions(pos, dtype="float64")
    bad = pos.copy()
    bad[3, 4:6] = [2, 1]
    with pytest.raises(ValueError, match="row 3, group 2 are not a strictly increasing pair"):
        hinm.sptc_metadata_from_positions(bad)
    bad[3, 4:6] = [1, 4]
    with pytest.raises(ValueError, match="row 3, group 2"):
        hinm.sptc_metadata_from_positions(bad)
    with pytest.raises(ValueError, match="row 0, group 1 are not a position in \\{0, 1\\}"):
        hinm.sptc_metadata_from_positions(np.tile(np.array([0, 2], np.uint8), (32, 4)), dtype="float32")
    with pytest.raises(ValueError, match="multiple of 32 rows"):
        hinm.sptc_metadata_from_positions(pos[:8])
    with pytest.raises(ValueError, match="layout"):
        hinm.sptc_metadata_from_positions(pos, layout="x")


def test_convert_layout_errors():
    _, meta = hinm.sptc_compress(np.zeros((32, 32), np.float16))
    with pytest.raises(ValueError, match="expected uint32 \\(1, 32\\)"):
        hinm.sptc_convert_layout(meta, "float16", (32, 32), "lanes", "cutlass")
    lanes = hinm.sptc_convert_layout(meta, "float16", (32, 32), "cutlass", "lanes")
    assert lanes.dtype == np.uint32 and lanes.shape == (1, 32)
    assert np.shares_memory(lanes, meta)


@pytest.mark.parametrize("dtype", ["float16", "int8"])
def test_hinm_tensor_positions_to_metadata(dtype, rng):
    """The HiNM format's vector-compressed [T*v, Kt] matrix gets mma.sp metadata from its indices."""
    r, k = 96, 256
    w = (rng.standard_normal((r, k)) * 20).astype(dtype)
    h = hinm.compress(w, "hinm:v32:0.5:2:4")
    meta = hinm.sptc_metadata_from_positions(h.indices, layout="lanes", dtype=dtype)
    vc = hinm.sptc_decompress(h.values, meta, layout="lanes")  # [T*v, Kt]
    dense = h.to_dense()
    row_perm, col_idx = np.asarray(h.row_perm), np.asarray(h.col_idx)
    v = 32
    expect = np.zeros_like(vc)
    for s in range(min(len(row_perm), vc.shape[0])):
        expect[s] = dense[row_perm[s], col_idx[s // v]]
    assert np.array_equal(vc, expect)


@needs_torch
def test_to_from_semi_structured(rng):
    import torch

    x = random_sparse(rng, "float16", 32, 64, integers=True)
    s = hinm.to_semi_structured(x)  # numpy in
    assert np.array_equal(canon(s.to_dense()), canon(x))  # torch decodes hinm's metadata
    assert np.array_equal(canon(hinm.from_semi_structured(s)), canon(x))
    with pytest.raises(TypeError, match="SparseSemiStructured"):
        hinm.from_semi_structured(torch.zeros(32, 64))


def test_positions_cols_argument():
    pos = np.tile(np.array([0, 1], np.uint8), (32, 16))
    assert np.array_equal(hinm.sptc_metadata_from_positions(pos, "float16", 64),
                          hinm.sptc_metadata_from_positions(pos, dtype="float16"))
    with pytest.raises(ValueError, match="cols=48"):
        hinm.sptc_metadata_from_positions(pos, "float16", 48)
