// Sparse-tensor-core metadata: index math (sptc_index.hpp), the compressor against the golden
// vectors (tests/data/sptc, embedded by make_cpp_golden.py), and a CPU emulation of one warp's
// mma.sp.m16n8k32 whose hardware side is written from the PTX fragment rules, independently of
// sptc_index.hpp, while the "kernel" side loads its registers with sptc_index.hpp's functions.
#include <cstring>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "check.hpp"
#include "hinm/hinm.hpp"

using namespace hinm;
namespace sp = hinm::sptc;

namespace {

struct GoldenCase {
  const char* name;
  int kind;  // 0 f16, 1 bf16, 2 int8, 3 f32, 4 f16 degenerate
  int m, k, a, b, seed;
  uint64_t dense_hash, values_hash;
  const uint32_t* words;
  int n_words;
  const int* C;
};
#include "sptc_golden.inc"

uint64_t fnv1a(const void* p, size_t n) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < n; ++i) h = (h ^ static_cast<const unsigned char*>(p)[i]) * 0x100000001b3ull;
  return h;
}

// The integer formulas of the golden generator (tests/data/sptc README).
int value(int r, int c, int a, int b) {
  const int v = (r * a + c * b) % 13 - 6;
  return v != 0 ? v : 7;
}
uint32_t pat_hash(uint32_t r, uint32_t q, uint32_t s) {
  uint32_t h = r * 2654435761u + q * 2246822519u + s * 3266489917u;
  h ^= h >> 15;
  h *= 2246822519u;
  return h >> 16;
}
std::vector<int> golden_dense_ints(const GoldenCase& g) {
  static const int combos[6][2] = {{0, 1}, {0, 2}, {1, 2}, {0, 3}, {1, 3}, {2, 3}};
  std::vector<int> d(size_t(g.m) * g.k, 0);
  for (int r = 0; r < g.m; ++r) {
    if (g.kind == 3) {
      for (int q = 0; q < g.k / 2; ++q) {
        const int c = 2 * q + int(pat_hash(r, q, g.seed) % 2);
        d[size_t(r) * g.k + c] = value(r, c, g.a, g.b);
      }
      continue;
    }
    for (int q = 0; q < g.k / 4; ++q) {
      const uint32_t h = pat_hash(r, q, g.seed);
      for (int i = 0; i < 4; ++i) {
        const bool keep = g.kind == 4 ? (h % 16 >> i & 1u) != 0 : (i == combos[h % 6][0] || i == combos[h % 6][1]);
        if (keep) d[size_t(r) * g.k + 4 * q + i] = value(r, 4 * q + i, g.a, g.b);
      }
    }
  }
  return d;
}

DType dtype_of_kind(int kind) {
  const DType t[] = {DType::f16, DType::bf16, DType::i8, DType::f32, DType::f16};
  return t[kind];
}

// Dense bytes of the golden case in its storage dtype.
std::vector<unsigned char> encode(const std::vector<int>& ints, DType t) {
  std::vector<unsigned char> out(ints.size() * size_t(dtype_size(t)));
  for (size_t i = 0; i < ints.size(); ++i) {
    const float f = float(ints[i]);
    if (t == DType::f16 || t == DType::bf16) {
      const uint16_t h = t == DType::f16 ? f32_to_f16(f) : f32_to_bf16(f);
      std::memcpy(&out[2 * i], &h, 2);
    } else if (t == DType::i8) {
      out[i] = static_cast<unsigned char>(static_cast<int8_t>(ints[i]));
    } else {
      std::memcpy(&out[4 * i], &f, 4);
    }
  }
  return out;
}

struct Compressed {
  std::vector<unsigned char> values;
  std::vector<uint32_t> words;
};
Compressed compress(std::vector<unsigned char>& dense, DType t, int64_t m, int64_t k) {
  Compressed c;
  c.values.resize(size_t(m * k / 2 * dtype_size(t)));
  c.words.resize(size_t(sptc_metadata_words(t, m, k)));
  sptc_compress(make_matrix(dense.data(), t, m, k), make_matrix(c.values.data(), t, m, k / 2),
                make_matrix(c.words.data(), DType::u32, int64_t(c.words.size()) / 32, 32));
  return c;
}

// ---- the hardware model: mma.sp.m16n8k32.row.col.f32.{f16,bf16}.f32 (PTX ISA 9.7.x "Matrix
// fragments for sparse mma.m16n8k32 with .f16 and .bf16", and "Sparse matrix storage"), written
// from the spec tables, not from sptc_index.hpp.
float half_to_f32(uint16_t h, bool bf16) { return bf16 ? bf16_to_f32(h) : f16_to_f32(h); }
void mma_sp_hw(const uint32_t a[32][4], const uint32_t b[32][4], const uint32_t e[32], int sel, float d[32][4],
               bool bf16) {
  float A[16][32] = {}, B[32][8] = {};
  for (int lane = 0; lane < 32; ++lane) {
    const int g = lane >> 2, t = lane & 3;
    // a0a1: (g, chunk t), a2a3: (g+8, chunk t), a4a5: (g, chunk 4+t), a6a7: (g+8, chunk 4+t)
    for (int r = 0; r < 4; ++r) {
      const int row = g + ((r & 1) ? 8 : 0), hi = r >> 1;
      const uint32_t E = e[4 * g + 2 * sel + hi];  // lanes 2*sel, 2*sel+1 of the quad supply e
      const uint32_t nib = E >> (((r & 1) ? 16 : 0) + 4 * t) & 0xFu;
      const int i0 = int(nib & 3u), i1 = int(nib >> 2);
      CHECK(i0 < i1);  // ::ordered_metadata
      const int base = 16 * hi + 4 * t;
      A[row][base + i0] = half_to_f32(uint16_t(a[lane][r]), bf16);
      A[row][base + i1] = half_to_f32(uint16_t(a[lane][r] >> 16), bf16);
    }
    // b0: k 2t..2t+1, b1: k 8+2t.., b2: k 16+2t.., b3: k 24+2t..; column n = g
    for (int r = 0; r < 4; ++r) {
      B[8 * r + 2 * t][g] = half_to_f32(uint16_t(b[lane][r]), bf16);
      B[8 * r + 2 * t + 1][g] = half_to_f32(uint16_t(b[lane][r] >> 16), bf16);
    }
  }
  for (int lane = 0; lane < 32; ++lane) {
    const int g = lane >> 2, t = lane & 3;
    for (int r = 0; r < 4; ++r) {  // c0,c1: row g, cols 2t, 2t+1; c2,c3: row g+8
      const int row = g + (r >= 2 ? 8 : 0), col = 2 * t + (r & 1);
      float acc = d[lane][r];
      for (int kk = 0; kk < 32; ++kk) acc += A[row][kk] * B[kk][col];
      d[lane][r] = acc;
    }
  }
}

}  // namespace

// ---- index math ----------------------------------------------------------------------------------

TEST(cutlass_offsets_equal_lane_word_positions) {
  for (auto kind : {sp::ValueKind::b16, sp::ValueKind::f32, sp::ValueKind::i8}) {
    const sp::Geometry g = sp::geometry(kind);
    for (int64_t m : {int64_t(g.row_align), int64_t(3 * g.row_align)}) {
      for (int64_t k : {int64_t(g.col_align), int64_t(2 * g.col_align), int64_t(5 * g.col_align)}) {
        const int64_t nc = sp::meta_cols(g, k), per_word = 32 / g.elem_bits;
        std::set<int64_t> seen;
        for (int64_t i = 0; i < m; ++i) {
          for (int64_t j = 0; j < nc; ++j) {
            const sp::WordPos p = sp::element_word(g, m, i, j);
            CHECK_EQ(sp::cutlass_offset(g, m, i, j), p.word() * per_word + p.shift / g.elem_bits);
            CHECK(p.lane >= 0 && p.lane < 32 && p.block < sp::num_blocks(g, m, k));
            seen.insert(sp::cutlass_offset(g, m, i, j));
          }
        }
        CHECK_EQ(int64_t(seen.size()), m * nc);  // a bijection onto the buffer
        CHECK_EQ(*seen.rbegin(), m * nc - 1);
      }
    }
  }
}

TEST(chunk_word_matches_mma_e_lane_for_16bit) {
  const sp::Geometry g = sp::geometry(sp::ValueKind::b16);
  const int64_t m = 64;
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t q = 0; q < 16; ++q) {
      const sp::WordPos p = sp::chunk_word(g, m, i, q);
      const int ii = int(i % 32), sel = sp::block_selector(ii);
      CHECK_EQ(p.lane, sp::e_lane(ii % 16, int(q % 8), sel));
      CHECK_EQ(p.shift, sp::e_shift(ii % 16, int(q % 8)));
      CHECK_EQ(p.block, (q / 8) * (m / 32) + i / 32);
    }
  }
}

TEST(fragment_maps_are_inverse_bijections) {
  std::set<int> a_seen, b_seen, c_seen;
  for (int lane = 0; lane < 32; ++lane) {
    for (int reg = 0; reg < 4; ++reg) {
      for (int half = 0; half < 2; ++half) {
        const int row = sp::a_frag_row(lane, reg), cc = sp::a_frag_ccol(lane, reg, half);
        CHECK_EQ(sp::a_frag_lane(row, cc), lane);
        CHECK_EQ(sp::a_frag_reg(row, cc), reg);
        CHECK_EQ(sp::a_frag_half(cc), half);
        CHECK_EQ(sp::a_frag_chunk(lane, reg), cc / 2);
        a_seen.insert(row * 16 + cc);
        b_seen.insert(sp::b_frag_k(lane, reg, half) * 8 + sp::b_frag_n(lane));
      }
      c_seen.insert(sp::c_frag_row(lane, reg) * 8 + sp::c_frag_col(lane, reg));
      for (int sel = 0; sel < 2; ++sel) {
        const int src = sp::e_source_lane(lane, reg, sel);
        CHECK_EQ(src, sp::e_lane(sp::a_frag_row(lane, reg), sp::a_frag_chunk(lane, reg), sel));
        CHECK_EQ(sp::e_code(0xFEDCBA98u, lane, reg),
                 (0xFEDCBA98u >> sp::e_shift(sp::a_frag_row(lane, reg), sp::a_frag_chunk(lane, reg))) & 0xFu);
      }
    }
  }
  CHECK_EQ(int(a_seen.size()), 256);
  CHECK_EQ(int(b_seen.size()), 256);
  CHECK_EQ(int(c_seen.size()), 128);
}

TEST(codes) {
  CHECK_EQ(sp::code_of(1, 2), 0x9u);
  CHECK_EQ(sp::code_of_pair_position(0), 0x4u);
  CHECK_EQ(sp::code_of_pair_position(1), 0xEu);
  int legal = 0;
  for (uint32_t c = 0; c < 16; ++c) legal += sp::code_is_ordered(c, sp::ValueKind::b16);
  CHECK_EQ(legal, 6);
  CHECK(!sp::code_is_ordered(0x8, sp::ValueKind::f32));
  CHECK(!sp::code_is_ordered(0x1, sp::ValueKind::b16));  // descending
}

// ---- golden vectors -------------------------------------------------------------------------------

TEST(golden_compress_bit_exact) {
  for (const GoldenCase& g : kGolden) {
    if (g.kind == 4) continue;
    const DType t = dtype_of_kind(g.kind);
    auto dense = encode(golden_dense_ints(g), t);
    CHECK_EQ(fnv1a(dense.data(), dense.size()), g.dense_hash);
    Compressed c = compress(dense, t, g.m, g.k);
    CHECK_EQ(fnv1a(c.values.data(), c.values.size()), g.values_hash);
    CHECK_EQ(int(c.words.size()), g.n_words);
    CHECK(std::memcmp(c.words.data(), g.words, c.words.size() * 4) == 0);
    std::vector<unsigned char> back(dense.size());
    sptc_decompress(make_matrix(c.values.data(), t, g.m, g.k / 2), make_matrix(c.words.data(), DType::u32, 1, g.n_words),
                    make_matrix(back.data(), t, g.m, g.k));
    CHECK(back == dense);
  }
}

TEST(golden_metadata_from_positions) {
  for (const GoldenCase& g : kGolden) {
    if (g.kind == 4) continue;
    const DType t = dtype_of_kind(g.kind);
    const auto ints = golden_dense_ints(g);
    std::vector<uint8_t> pos;
    for (int r = 0; r < g.m; ++r) {
      for (int c = 0; c < g.k; ++c) {
        const int group = t == DType::f32 ? 2 : 4;
        if (ints[size_t(r) * g.k + c] != 0) pos.push_back(uint8_t(c % group));
      }
    }
    CHECK_EQ(int64_t(pos.size()), int64_t(g.m) * g.k / 2);
    std::vector<uint32_t> words(size_t(g.n_words));
    sptc_metadata_from_positions(make_matrix(pos.data(), DType::u8, g.m, g.k / 2), t,
                                 make_matrix(words.data(), DType::u32, g.n_words / 32, 32));
    CHECK(std::memcmp(words.data(), g.words, words.size() * 4) == 0);
  }
}

TEST(golden_degenerate) {
  const GoldenCase& g = kGolden[4];
  auto ints = golden_dense_ints(g);
  auto dense = encode(ints, DType::f16);
  CHECK_EQ(fnv1a(dense.data(), dense.size()), g.dense_hash);
  CHECK_THROWS(compress(dense, DType::f16, g.m, g.k), std::invalid_argument);
  // Keep the first two nonzeros of over-full chunks: every chunk then has <= 2.
  std::vector<bool> lossless(size_t(g.m) * g.k / 4);
  for (int r = 0; r < g.m; ++r) {
    for (int q = 0; q < g.k / 4; ++q) {
      int nnz = 0;
      for (int i = 0; i < 4; ++i) {
        int& x = ints[size_t(r) * g.k + 4 * q + i];
        if (x != 0 && ++nnz > 2) x = 0;
      }
      lossless[size_t(r) * (g.k / 4) + q] = nnz <= 2;
    }
  }
  auto pruned = encode(ints, DType::f16);
  Compressed c = compress(pruned, DType::f16, g.m, g.k);
  std::vector<unsigned char> back(pruned.size());
  sptc_decompress(make_matrix(c.values.data(), DType::f16, g.m, g.k / 2),
                  make_matrix(c.words.data(), DType::u32, 1, int64_t(c.words.size())),
                  make_matrix(back.data(), DType::f16, g.m, g.k));
  CHECK(back == pruned);
  const sp::Geometry geo = sp::geometry(sp::ValueKind::b16);
  int same = 0;
  for (int r = 0; r < g.m; ++r) {
    for (int q = 0; q < g.k / 4; ++q) {
      const sp::WordPos p = sp::chunk_word(geo, g.m, r, q);
      const uint32_t ours = c.words[size_t(p.word())] >> p.shift & 0xFu;
      CHECK(sp::code_is_ordered(ours, sp::ValueKind::b16));
      // chunks torch encodes losslessly: we pick the very same code
      if (lossless[size_t(r) * (g.k / 4) + q]) {
        CHECK_EQ(ours, g.words[p.word()] >> p.shift & 0xFu);
        ++same;
      }
    }
  }
  CHECK(same > 300);  // of 512 chunks, 160 are over-full
}

// One warp per (16-row tile, 32-column K slice) of the golden f16/bf16 matrices: registers loaded
// with sptc_index.hpp, lane words straight from the compressor's output, product == golden C.
TEST(warp_emulation_reproduces_golden_product) {
  for (const GoldenCase& g : kGolden) {
    if (g.kind != 0 && g.kind != 1) continue;
    const bool bf16 = g.kind == 1;
    const DType t = dtype_of_kind(g.kind);
    auto dense = encode(golden_dense_ints(g), t);
    Compressed c = compress(dense, t, g.m, g.k);
    const auto* vals = reinterpret_cast<const uint16_t*>(c.values.data());
    auto bval = [&](int k, int n) {
      const float f = float((3 * k + 5 * n) % 7 - 3);
      return bf16 ? f32_to_bf16(f) : f32_to_f16(f);
    };
    const sp::Geometry geo = sp::geometry(sp::ValueKind::b16);
    for (int tile = 0; tile < g.m / 16; ++tile) {
      float d[32][4] = {};
      const int sel = sp::block_selector(tile * 16 % 32);
      for (int ks = 0; ks < g.k / 32; ++ks) {
        uint32_t a[32][4], b[32][4], e[32];
        const int64_t block = int64_t(ks) * (g.m / geo.block_rows) + tile / 2;  // K-slice major
        for (int lane = 0; lane < 32; ++lane) {
          e[lane] = c.words[size_t(block * 32 + lane)];
          for (int reg = 0; reg < 4; ++reg) {
            uint32_t wa = 0, wb = 0;
            for (int half = 0; half < 2; ++half) {
              const int row = tile * 16 + sp::a_frag_row(lane, reg);
              const int col = ks * 16 + sp::a_frag_ccol(lane, reg, half);
              wa |= uint32_t(vals[size_t(row) * (g.k / 2) + col]) << (16 * half);
              wb |= uint32_t(bval(ks * 32 + sp::b_frag_k(lane, reg, half), sp::b_frag_n(lane))) << (16 * half);
            }
            a[lane][reg] = wa;
            b[lane][reg] = wb;
          }
        }
        mma_sp_hw(a, b, e, sel, d, bf16);
      }
      for (int lane = 0; lane < 32; ++lane)
        for (int reg = 0; reg < 4; ++reg)
          CHECK_EQ(d[lane][reg], float(g.C[(tile * 16 + sp::c_frag_row(lane, reg)) * 8 + sp::c_frag_col(lane, reg)]));
    }
  }
}

// ---- random inputs and error paths ---------------------------------------------------------------

TEST(random_round_trip_and_positions_agree) {
  std::mt19937 rng(7);
  for (DType t : {DType::f16, DType::bf16, DType::i8, DType::f32}) {
    const sp::Geometry geo = sp::geometry(sptc_kind(t));
    const int64_t m = 2 * geo.row_align, k = 3 * geo.col_align, group = geo.chunk_width;
    std::vector<int> ints(size_t(m * k), 0);
    std::vector<uint8_t> pos;
    for (int64_t r = 0; r < m; ++r) {
      for (int64_t q = 0; q < k / group; ++q) {
        int p[2] = {int(rng() % group), 0};
        if (geo.kept_per_chunk == 2) {
          do p[1] = int(rng() % group); while (p[1] == p[0]);
          if (p[1] < p[0]) std::swap(p[0], p[1]);
        }
        for (int i = 0; i < geo.kept_per_chunk; ++i) {
          ints[size_t(r * k + q * group + p[i])] = (rng() % 2 ? 1 : -1) * int(rng() % 11 + 1);
          pos.push_back(uint8_t(p[i]));
        }
      }
    }
    auto dense = encode(ints, t);
    Compressed c = compress(dense, t, m, k);
    std::vector<uint32_t> words(c.words.size());
    sptc_metadata_from_positions(make_matrix(pos.data(), DType::u8, m, k / 2), t,
                                 make_matrix(words.data(), DType::u32, 1, int64_t(words.size())));
    CHECK(words == c.words);
    std::vector<unsigned char> back(dense.size());
    sptc_decompress(make_matrix(c.values.data(), t, m, k / 2), make_matrix(words.data(), DType::u32, 1, int64_t(words.size())),
                    make_matrix(back.data(), t, m, k));
    CHECK(back == dense);
  }
}

TEST(bad_inputs_throw) {
  std::vector<uint16_t> d(64 * 64, 0), v(64 * 32);
  std::vector<uint32_t> w(256);
  auto M = [](void* p, DType t, int64_t r, int64_t c) { return make_matrix(p, t, r, c); };
  CHECK_THROWS(sptc_compress(M(d.data(), DType::u16, 32, 64), M(v.data(), DType::u16, 32, 32), M(w.data(), DType::u32, 2, 32)),
               std::invalid_argument);  // dtype
  CHECK_THROWS(sptc_compress(M(d.data(), DType::f16, 16, 64), M(v.data(), DType::f16, 16, 32), M(w.data(), DType::u32, 1, 32)),
               std::invalid_argument);  // rows
  CHECK_THROWS(sptc_compress(M(d.data(), DType::f16, 32, 48), M(v.data(), DType::f16, 32, 24), M(w.data(), DType::u32, 1, 48)),
               std::invalid_argument);  // K
  CHECK_THROWS(sptc_compress(M(d.data(), DType::f16, 32, 64), M(v.data(), DType::f16, 32, 32), M(w.data(), DType::u32, 1, 32)),
               std::invalid_argument);  // metadata size
  CHECK_THROWS(sptc_compress(M(d.data(), DType::f16, 32, 64), M(v.data(), DType::f16, 32, 31), M(w.data(), DType::u32, 2, 32)),
               std::invalid_argument);  // values shape
  d[5 * 64 + 8] = d[5 * 64 + 9] = d[5 * 64 + 10] = 0x3c00;  // row 5, chunk 2: three ones
  try {
    sptc_compress(M(d.data(), DType::f16, 32, 64), M(v.data(), DType::f16, 32, 32), M(w.data(), DType::u32, 2, 32));
    CHECK(false);
  } catch (const std::invalid_argument& e) {
    CHECK(std::string(e.what()).find("row 5, chunk 2") != std::string::npos);
  }
  std::fill(w.begin(), w.end(), 0u);  // code 0x0 is illegal
  CHECK_THROWS(sptc_decompress(M(v.data(), DType::f16, 32, 32), M(w.data(), DType::u32, 2, 32), M(d.data(), DType::f16, 32, 64)),
               std::invalid_argument);
  std::vector<uint8_t> pos(32 * 32, 0);  // (0, 0) is not strictly increasing
  CHECK_THROWS(sptc_metadata_from_positions(M(pos.data(), DType::u8, 32, 32), DType::f16, M(w.data(), DType::u32, 2, 32)),
               std::invalid_argument);
  CHECK_THROWS(sptc_metadata_from_positions(M(pos.data(), DType::u8, 32, 32), DType::f64, M(w.data(), DType::u32, 2, 32)),
               std::invalid_argument);
}

// ---- a synthetic 64 x 64 matrix with 2-, 1- and 0-nonzero chunks, through the short-form API ----------
namespace {

constexpr int kMixRows = 64, kMixCols = 64, kMixN = 8;

// A 2:4 matrix of small integers with every kind of chunk (2, 1 and 0 nonzeros).
std::vector<uint16_t> make_mixed_dense() {
  std::vector<uint16_t> d(kMixRows * kMixCols, 0);
  const int combos[6][2] = {{0, 1}, {0, 2}, {1, 2}, {0, 3}, {1, 3}, {2, 3}};
  for (int r = 0; r < kMixRows; ++r)
    for (int q = 0; q < kMixCols / 4; ++q) {
      const int h = (r * 7 + q * 13) % 8;
      if (h == 6) continue;                          // empty chunk
      const int* c = combos[h % 6];
      d[r * kMixCols + q * 4 + c[0]] = f32_to_f16(float((r + 2 * q) % 7 - 3 ? (r + 2 * q) % 7 - 3 : 5));
      if (h != 7) d[r * kMixCols + q * 4 + c[1]] = f32_to_f16(float((3 * r + q) % 5 + 1));
    }
  return d;
}

}  // namespace

TEST(sptc_warp_emulation_reproduces_dense_product) {
  std::vector<uint16_t> dense = make_mixed_dense(), values(kMixRows * kMixCols / 2);
  std::vector<uint32_t> meta(sptc_meta_words(DType::f16, kMixRows, kMixCols));
  sptc_compress(make_matrix(dense.data(), DType::f16, kMixRows, kMixCols),
                make_matrix(values.data(), DType::f16, kMixRows, kMixCols / 2), meta.data());
  std::vector<float> b(kMixCols * kMixN);
  for (int k = 0; k < kMixCols; ++k)
    for (int n = 0; n < kMixN; ++n) b[k * kMixN + n] = float((3 * k + 5 * n) % 7 - 3);

  for (int tile = 0; tile < kMixRows / 16; ++tile) {
    const int sel = tile % 2;  // two m16 tiles share one lane word per 32-row block
    float acc[32][4] = {};
    for (int ks = 0; ks < kMixCols / 32; ++ks) {
      const uint32_t* e = meta.data() + (int64_t(ks) * (kMixRows / 32) + tile / 2) * 32;  // this block's lane words
      // The hardware's view: row rho of the tile expands its 16 compressed values with the codes
      // supplied by lane 4*(rho%8) + 2*sel + (q/4), bits 16*(rho/8) + 4*(q%4) + [0, 4).
      for (int rho = 0; rho < 16; ++rho) {
        float a_dense[32] = {};
        for (int q = 0; q < 8; ++q) {
          const uint32_t word = e[4 * (rho % 8) + 2 * sel + q / 4];
          const uint32_t code = word >> (16 * (rho / 8) + 4 * (q % 4)) & 0xF;
          CHECK((code & 3) < (code >> 2));
          // value registers: compressed column 2q, 2q+1 of row rho come from the A fragment
          for (int half = 0; half < 2; ++half) {
            const int c = 2 * q + half;
            int found = 0;
            for (int lane = 0; lane < 32; ++lane)
              for (int el = 0; el < 8; ++el)
                if (sptc::frag_a_row(lane, el) == rho && sptc::frag_a_col(lane, el) == c) {
                  a_dense[4 * q + (half ? code >> 2 & 3 : code & 3)] =
                      f16_to_f32(values[(tile * 16 + rho) * (kMixCols / 2) + ks * 16 + c]);
                  ++found;
                }
            CHECK_EQ(found, 1);  // every compressed element sits in exactly one lane register
          }
        }
        for (int n = 0; n < kMixN; ++n) {
          float sum = 0;
          for (int k = 0; k < 32; ++k) sum += a_dense[k] * b[(ks * 32 + k) * kMixN + n];
          // accumulator register that holds (rho, n)
          for (int lane = 0; lane < 32; ++lane)
            for (int el = 0; el < 4; ++el)
              if (sptc::frag_c_row(lane, el) == rho && sptc::frag_c_n(lane, el) == n) acc[lane][el] += sum;
        }
      }
    }
    for (int lane = 0; lane < 32; ++lane)
      for (int el = 0; el < 4; ++el) {
        const int r = tile * 16 + sptc::frag_c_row(lane, el), n = sptc::frag_c_n(lane, el);
        float ref = 0;
        for (int k = 0; k < kMixCols; ++k) ref += f16_to_f32(dense[r * kMixCols + k]) * b[k * kMixN + n];
        CHECK_EQ(acc[lane][el], ref);
      }
  }
}

TEST(sptc_roundtrip_and_errors) {
  std::vector<uint16_t> dense = make_mixed_dense(), values(kMixRows * kMixCols / 2), back(kMixRows * kMixCols);
  std::vector<uint32_t> meta(sptc_meta_words(DType::f16, kMixRows, kMixCols));
  auto dm = make_matrix(dense.data(), DType::f16, kMixRows, kMixCols);
  auto vm = make_matrix(values.data(), DType::f16, kMixRows, kMixCols / 2);
  sptc_compress(dm, vm, meta.data());
  sptc_decompress(vm, meta.data(), make_matrix(back.data(), DType::f16, kMixRows, kMixCols));
  CHECK(back == dense);
  CHECK_THROWS(sptc_meta_words(DType::f16, 16, 64), std::invalid_argument);
  CHECK_THROWS(sptc_meta_words(DType::i8, 16, 32), std::invalid_argument);
  CHECK_THROWS(sptc_meta_words(DType::f64, 32, 32), std::invalid_argument);
  dense[3] = dense[0] = dense[1] = f32_to_f16(1.0f);
  CHECK_THROWS(sptc_compress(dm, vm, meta.data()), std::invalid_argument);
  meta[0] = 0;  // repeated indices: illegal code
  CHECK_THROWS(sptc_decompress(vm, meta.data(), make_matrix(back.data(), DType::f16, kMixRows, kMixCols)),
               std::invalid_argument);
}
