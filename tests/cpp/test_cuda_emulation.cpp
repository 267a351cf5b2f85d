// CPU emulation of the CUDA HiNM SpMM: the kernel's own geometry (cuda/hinm_tile.hpp) and the
// host layout converter (hinm/cuda_layout.hpp) drive an emulated thread block — cp.async copies
// into a shared-memory stage, ldmatrix.x4.trans, and mma.sp::ordered_metadata m16n8k32 modelled
// from the PTX fragment rules (sptc-metadata.md 1.5), independently of the layout code — and the
// result must equal the dense product exactly (integer-valued inputs). A wrong lane, bit, block,
// selector, swizzle or epilogue index changes the output.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <stdexcept>
#include <vector>

#include "../../cuda/hinm_tile.hpp"
#include "check.hpp"
#include "hinm/cuda_layout.hpp"
#include "hinm/hinm.hpp"

using namespace hinm;
namespace ct = hinm::cuda_tile;

namespace {

uint16_t to16(float f, bool bf16) { return bf16 ? f32_to_bf16(f) : f32_to_f16(f); }
float from16(uint16_t h, bool bf16) { return bf16 ? bf16_to_f32(h) : f16_to_f32(h); }

// ---- the hardware model ------------------------------------------------------------------------

// ldmatrix.sync.aligned.m8n8.x4.trans.b16: lanes 8i..8i+7 give the row addresses of matrix i;
// register i of lane L = (M_i[2(L%4)][L/4], M_i[2(L%4)+1][L/4]) (low, high half).
void ldmatrix_x4_trans(const uint16_t* base, const int addr[32], uint32_t out[32][4]) {
  for (int i = 0; i < 4; ++i) {
    uint16_t m[8][8];
    int bank_group_seen = 0;
    for (int r = 0; r < 8; ++r) {
      const int a = addr[8 * i + r];
      CHECK(a % 8 == 0);  // 16-byte aligned rows
      const int bank_group = (a / 8) % 8;  // which 16-byte slice of the 128-byte bank window
      CHECK(!(bank_group_seen & (1 << bank_group)));  // the 8 rows of one matrix: no bank conflict
      bank_group_seen |= 1 << bank_group;
      for (int c = 0; c < 8; ++c) m[r][c] = base[a + c];
    }
    for (int lane = 0; lane < 32; ++lane)
      out[lane][i] = uint32_t(m[2 * (lane % 4)][lane / 4]) | uint32_t(m[2 * (lane % 4) + 1][lane / 4]) << 16;
  }
}

// mma.sp::ordered_metadata.sync.aligned.m16n8k32.row.col.f32.{f16,bf16}: d += A B with A rebuilt
// from the compressed fragment a, the metadata e of the lanes the selector names, B from b.
void mma_sp_m16n8k32(const uint32_t a[32][4], const uint32_t b[32][4], const uint32_t e[32], int sel,
                     float d[32][4], bool bf16) {
  float ac[16][16], A[16][32] = {}, B[32][8];
  for (int lane = 0; lane < 32; ++lane) {
    const int g = lane / 4, t = lane % 4;
    const int rows[4] = {g, g + 8, g, g + 8}, cols[4] = {2 * t, 2 * t, 8 + 2 * t, 8 + 2 * t};
    for (int r = 0; r < 4; ++r) {
      ac[rows[r]][cols[r]] = from16(uint16_t(a[lane][r]), bf16);
      ac[rows[r]][cols[r] + 1] = from16(uint16_t(a[lane][r] >> 16), bf16);
    }
    const int krow[4] = {2 * t, 8 + 2 * t, 16 + 2 * t, 24 + 2 * t};
    for (int r = 0; r < 4; ++r) {
      B[krow[r]][g] = from16(uint16_t(b[lane][r]), bf16);
      B[krow[r] + 1][g] = from16(uint16_t(b[lane][r] >> 16), bf16);
    }
  }
  for (int r = 0; r < 16; ++r)
    for (int q = 0; q < 8; ++q) {  // chunk q = dense columns 4q..4q+3
      const uint32_t word = e[4 * (r % 8) + 2 * sel + q / 4];
      const uint32_t code = (word >> (16 * (r / 8) + 4 * (q % 4))) & 0xfu;
      const int i0 = int(code & 3u), i1 = int(code >> 2);
      CHECK(i0 < i1);  // ordered_metadata: anything else is undefined behaviour
      A[r][4 * q + i0] = ac[r][2 * q];
      A[r][4 * q + i1] = ac[r][2 * q + 1];
    }
  for (int lane = 0; lane < 32; ++lane) {
    const int g = lane / 4, t = lane % 4;
    const int rows[4] = {g, g, g + 8, g + 8}, cols[4] = {2 * t, 2 * t + 1, 2 * t, 2 * t + 1};
    for (int r = 0; r < 4; ++r) {
      float s = 0;
      for (int k = 0; k < 32; ++k) s += A[rows[r]][k] * B[k][cols[r]];
      d[lane][r] += s;
    }
  }
}

// ---- a HiNM weight, its dense reference, and the emulated kernel --------------------------------

struct Case {
  int64_t R, K, v, Kt, N;
  bool bf16, permute, plain, bias;
  bool accumulate = false;  // y += W x (+ bias)
};

struct Weight {
  int64_t S;
  std::vector<uint16_t> vals;
  std::vector<uint8_t> pos;
  std::vector<int32_t> col_idx;
  std::vector<int64_t> row_perm;
  std::vector<float> dense;  // [R, K]
};

Weight make_weight(const Case& c, std::mt19937& rng) {
  Weight w;
  const int64_t T = (c.R + c.v - 1) / c.v;
  w.S = T * c.v;
  const int64_t kc = c.Kt / 2;
  w.vals.assign(w.S * kc, 0);
  w.pos.assign(w.S * kc, 0);
  w.row_perm.resize(c.R);
  std::iota(w.row_perm.begin(), w.row_perm.end(), 0);
  if (c.permute) std::shuffle(w.row_perm.begin(), w.row_perm.end(), rng);
  std::vector<int32_t> all(c.K);
  std::iota(all.begin(), all.end(), 0);
  for (int64_t t = 0; t < T; ++t) {
    std::shuffle(all.begin(), all.end(), rng);
    std::vector<int32_t> cols(all.begin(), all.begin() + c.Kt);
    if (!c.permute) std::sort(cols.begin(), cols.end());
    w.col_idx.insert(w.col_idx.end(), cols.begin(), cols.end());
  }
  if (c.plain) std::iota(w.col_idx.begin(), w.col_idx.end(), 0);
  static const int pairs[6][2] = {{0, 1}, {0, 2}, {0, 3}, {1, 2}, {1, 3}, {2, 3}};
  std::uniform_int_distribution<int> val(-3, 3), pair(0, 5);
  w.dense.assign(c.R * c.K, 0.f);
  for (int64_t s = 0; s < c.R; ++s)
    for (int64_t q = 0; q < kc / 2; ++q) {
      const int p = pair(rng);
      for (int h = 0; h < 2; ++h) {
        const float x = float(val(rng));
        w.vals[s * kc + 2 * q + h] = to16(x, c.bf16);
        w.pos[s * kc + 2 * q + h] = uint8_t(pairs[p][h]);
        const int64_t col = w.col_idx[(s / c.v) * c.Kt + 4 * q + pairs[p][h]];
        w.dense[w.row_perm[s] * c.K + col] = x;
      }
    }
  return w;
}

struct Device {  // what the kernel's pointers point at
  std::vector<uint16_t> frag;
  std::vector<uint32_t> words;
  std::vector<uint16_t> x;  // [K, ldx]
  int64_t ldx;
  std::vector<uint16_t> bias;
};

template <int BM>
void emulate(const Case& c, const Weight& w, const Device& d, std::vector<uint16_t>& y) {
  using G = ct::Tile<BM>;
  const int64_t ks_total = cuda_layout::kslices(c.Kt), ktiles = ks_total / ct::KSTEPS;
  const int32_t* col_idx = c.plain ? nullptr : w.col_idx.data();
  const int64_t* row_perm = c.permute ? w.row_perm.data() : nullptr;
  const int64_t pv = col_idx ? c.v : cuda_layout::kSlotAlign;
  const int64_t slots = col_idx ? w.S : c.R;
  const auto* frag = reinterpret_cast<const uint8_t*>(d.frag.data());
  const auto* words = reinterpret_cast<const uint8_t*>(d.words.data());
  const auto* x = reinterpret_cast<const uint8_t*>(d.x.data());
  const int64_t frag_bytes = int64_t(d.frag.size()) * 2, word_bytes = int64_t(d.words.size()) * 4,
                x_bytes = int64_t(d.x.size()) * 2;
  std::vector<uint8_t> stage(G::STAGE_BYTES);

  auto copy = [&](const ct::Chunk& ch, const uint8_t* src, int64_t src_bytes) {
    CHECK(ch.dst >= 0 && ch.dst + 16 <= G::STAGE_BYTES && ch.dst % 16 == 0);
    if (!ch.valid) { std::memset(&stage[ch.dst], 0, 16); return; }
    CHECK(ch.src >= 0 && ch.src + 16 <= src_bytes && ch.src % 16 == 0);
    if (ch.src >= 0 && ch.src + 16 <= src_bytes) std::memcpy(&stage[ch.dst], src + ch.src, 16);
  };

  for (int64_t by = 0; by < (slots + BM - 1) / BM; ++by)
    for (int64_t bx = 0; bx < (c.N + ct::BN - 1) / ct::BN; ++bx) {
      const int64_t slot0 = by * BM, n0 = bx * ct::BN;
      const int32_t* tile_cols = col_idx ? col_idx + (slot0 / pv) * c.Kt : nullptr;
      static float acc[G::WARPS_M * ct::WARPS_N][G::MT][ct::N8][32][4];
      std::memset(acc, 0, sizeof(acc));
      for (int64_t kt = 0; kt < ktiles; ++kt) {
        std::fill(stage.begin(), stage.end(), uint8_t(0xA5));  // anything not copied is garbage
        for (int i = 0; i < G::A_CHUNKS; ++i) copy(ct::a_chunk<BM>(i, slot0, ks_total, kt), frag, frag_bytes);
        for (int i = 0; i < G::META_CHUNKS; ++i) copy(ct::meta_chunk<BM>(i, slot0, ks_total, kt), words, word_bytes);
        for (int i = 0; i < G::B_CHUNKS; ++i)
          copy(ct::b_chunk<BM>(i, tile_cols, c.Kt, kt, n0, c.N, d.ldx), x, x_bytes);
        const auto* a_s = reinterpret_cast<const uint32_t*>(stage.data());
        const auto* meta_s = reinterpret_cast<const uint32_t*>(stage.data() + G::A_BYTES);
        const auto* b_s = reinterpret_cast<const uint16_t*>(stage.data() + G::A_BYTES + G::META_BYTES);
        for (int warp = 0; warp < G::WARPS_M * ct::WARPS_N; ++warp) {
          const int wm = warp / ct::WARPS_N, wn = warp % ct::WARPS_N;
          for (int ks = 0; ks < ct::KSTEPS; ++ks) {
            uint32_t e[G::MT][32], a[G::MT][32][4];
            for (int mt = 0; mt < G::MT; ++mt)
              for (int lane = 0; lane < 32; ++lane) {
                const int mtile = wm * G::MT + mt;
                e[mt][lane] = meta_s[ct::meta_word(mtile, ks, lane)];
                for (int r = 0; r < 4; ++r) a[mt][lane][r] = a_s[ct::a_frag_chunk(mtile, ks, lane) * 4 + r];
              }
            for (int nt = 0; nt < ct::N8; ++nt) {
              int addr[32];
              for (int lane = 0; lane < 32; ++lane) addr[lane] = ct::b_ldmatrix_elem(wn, nt, ks, lane);
              uint32_t b[32][4];
              ldmatrix_x4_trans(b_s, addr, b);
              for (int mt = 0; mt < G::MT; ++mt)
                mma_sp_m16n8k32(a[mt], b, e[mt], ct::selector(wm * G::MT + mt), acc[warp][mt][nt], c.bf16);
            }
          }
        }
      }
      // epilogue: stage the accumulators in "shared memory", then store 8 outputs per chunk
      std::vector<float> c_s(G::SMEM_BYTES / 4, NAN);
      for (int warp = 0; warp < G::WARPS_M * ct::WARPS_N; ++warp) {
        const int wm = warp / ct::WARPS_N, wn = warp % ct::WARPS_N;
        for (int mt = 0; mt < G::MT; ++mt)
          for (int nt = 0; nt < ct::N8; ++nt)
            for (int lane = 0; lane < 32; ++lane)
              for (int r = 0; r < 4; ++r) {
                const int idx = ct::c_stage_index(wm * G::MT + mt, wn, nt, lane, r);
                CHECK(idx >= 0 && (idx + 1) * 4 <= G::SMEM_BYTES);
                c_s[idx] = acc[warp][mt][nt][lane][r];
              }
      }
      for (int i = 0; i < BM * ct::C_CHUNKS_PER_ROW; ++i) {
        const int r = ct::c_chunk_row(i), cc = ct::c_chunk_col(i);
        const int64_t s = slot0 + r, col = n0 + cc;
        if (s >= c.R || col >= c.N) continue;
        const int64_t row = row_perm ? row_perm[s] : s;
        const float b = c.bias ? from16(d.bias[row], c.bf16) : 0.f;
        for (int e = 0; e < 8 && col + e < c.N; ++e) {
          const float old = c.accumulate ? from16(y[row * c.N + col + e], c.bf16) : 0.f;
          y[row * c.N + col + e] = to16(c_s[r * ct::C_PITCH + cc + e] + b + old, c.bf16);
        }
      }
    }
}

void run_case(const Case& c, std::mt19937& rng) {
  const Weight w = make_weight(c, rng);
  Device d;
  const int64_t sp = cuda_layout::slots_padded(w.S), kp = cuda_layout::kept_padded(c.Kt);
  d.frag.assign(sp * kp / 2, 0xFFFF);  // garbage: the converter must write every element
  d.words.assign(sp / 32 * kp, 0xFFFFFFFFu);
  const DType dt = c.bf16 ? DType::bf16 : DType::f16;
  HiNMView view;
  view.rows = c.R;
  view.cols = c.K;
  view.v = int(c.v);
  view.kept = c.Kt;
  view.values = make_matrix(const_cast<uint16_t*>(w.vals.data()), dt, w.S, c.Kt / 2);
  view.positions = make_matrix(const_cast<uint8_t*>(w.pos.data()), DType::u8, w.S, c.Kt / 2);
  pack_cuda_layout(view, make_matrix(d.frag.data(), dt, sp, kp / 2), make_matrix(d.words.data(), DType::u32, sp / 32, kp));

  d.ldx = (c.N + 7) / 8 * 8 + 8;
  d.x.assign(c.K * d.ldx, to16(NAN, c.bf16));  // columns >= N are NaN: they must not reach y
  std::vector<float> xf(c.K * c.N);
  std::uniform_int_distribution<int> val(-3, 3);
  for (int64_t k = 0; k < c.K; ++k)
    for (int64_t n = 0; n < c.N; ++n) {
      xf[k * c.N + n] = float(val(rng));
      d.x[k * d.ldx + n] = to16(xf[k * c.N + n], c.bf16);
    }
  std::vector<float> bias(c.R, 0.f);
  if (c.bias)
    for (auto& b : bias) b = float(val(rng));
  for (float b : bias) d.bias.push_back(to16(b, c.bf16));

  std::vector<uint16_t> y(c.R * c.N, to16(NAN, c.bf16));
  std::vector<float> y0(c.R * c.N, 0.f);
  if (c.accumulate)
    for (int64_t i = 0; i < c.R * c.N; ++i) {
      y0[i] = float(val(rng));
      y[i] = to16(y0[i], c.bf16);
    }
  const int bm = ct::block_rows(int(c.v), !c.plain && w.S / c.v > 1);
  if (bm == 128) emulate<128>(c, w, d, y);
  else if (bm == 64) emulate<64>(c, w, d, y);
  else emulate<32>(c, w, d, y);

  int bad = 0;
  for (int64_t r = 0; r < c.R; ++r)
    for (int64_t n = 0; n < c.N; ++n) {
      double s = bias[r] + y0[r * c.N + n];
      for (int64_t k = 0; k < c.K; ++k) s += double(w.dense[r * c.K + k]) * xf[k * c.N + n];
      const uint16_t expect = to16(float(s), c.bf16);
      if (y[r * c.N + n] != expect && bad++ < 5) CHECK_EQ(from16(y[r * c.N + n], c.bf16), float(s));
    }
  CHECK_EQ(bad, 0);
}

}  // namespace

TEST(emulated_kernel_reproduces_dense_hinm_product) {
  std::mt19937 rng(7);
  //        R    K    v    Kt   N   bf16  permute plain  bias
  run_case({70, 200, 32, 100, 37, false, true, false, true}, rng);    // BM 32, padded slots, Kt % 64 != 0
  run_case({128, 256, 64, 128, 130, false, true, false, false}, rng); // BM 64, two column blocks
  run_case({133, 96, 128, 48, 8, true, true, false, true}, rng);      // BM 128, bf16, padded last tile
  run_case({96, 160, 96, 64, 21, true, false, false, false}, rng);    // v = 96 -> BM 32, no permutation
  run_case({200, 192, 64, 192, 1, false, true, false, true}, rng);    // Kt == K (input permutation only), N = 1
  run_case({64, 128, 64, 64, 24, false, true, false, true, true}, rng); // accumulate into y
  run_case({100, 96, 100, 96, 12, false, true, false, false}, rng);   // one tile, v = R = 100: any BM
}

TEST(emulated_kernel_reproduces_plain_2_4_product) {
  std::mt19937 rng(11);
  run_case({50, 64, 50, 64, 19, false, false, true, false}, rng);
  run_case({160, 136, 160, 136, 140, true, false, true, true}, rng);
}

TEST(block_height_follows_v) {
  CHECK_EQ(ct::block_rows(128, true), 128);
  CHECK_EQ(ct::block_rows(192, true), 64);
  CHECK_EQ(ct::block_rows(96, true), 32);
  CHECK_EQ(ct::block_rows(48, true), 0);
  CHECK_EQ(ct::block_rows(48, false), 128);
  // 4096 rows, batch 512 on 132 SMs: 32 x 4 blocks of 128 rows are too few -> 64-row blocks
  CHECK_EQ(ct::launch_block_rows(128, 4096, 512, 132), 64);
  CHECK_EQ(ct::launch_block_rows(128, 4096, 4096, 132), 128);
  CHECK_EQ(ct::launch_block_rows(32, 64, 8, 132), 32);
}

TEST(lane_words_match_the_golden_f16_block) {
  // sptc-metadata.md 2.2(6) example (f16_32x64): meta[0][0]=0x9ee9 and meta[8][0]=0x4ddd form the
  // lane-0 word 0x4ddd9ee9; meta[0][1]=0xcd99, meta[8][1]=0xd484 the lane-1 word; meta[16][0],
  // meta[24][0] the lane-2 word. Here: place those per-row codes and read the words back.
  const uint16_t raw[4][2] = {{0x9ee9, 0xcd99}, {0x4ddd, 0xd484}, {0x849d, 0}, {0x4899, 0}};
  const int rows[4] = {0, 8, 16, 24};
  std::vector<uint32_t> words(32, 0);
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 2; ++j)
      for (int q = 0; q < 4; ++q) {
        const int64_t chunk = 4 * j + q;
        const uint32_t code = (raw[i][j] >> (4 * q)) & 0xfu;
        words[cuda_layout::lane_word_index(rows[i], chunk, 1)] |= code << cuda_layout::lane_word_shift(rows[i], chunk);
      }
  CHECK_EQ(words[0], 0x4ddd9ee9u);
  CHECK_EQ(words[1], 0xd484cd99u);
  CHECK_EQ(words[2], 0x4899849du);
}

TEST(kernel_geometry_uses_the_shared_sptc_maps) {
  // The epilogue's accumulator coordinates and the converter's fragment order come from
  // sptc_index.hpp; the A fragment map is a bijection onto the 16 x 16 compressed tile.
  int seen[16][16] = {};
  for (int lane = 0; lane < 32; ++lane)
    for (int e = 0; e < 8; ++e) ++seen[sptc::a_frag_row(lane, e / 2)][sptc::a_frag_ccol(lane, e / 2, e % 2)];
  for (auto& row : seen)
    for (int n : row) CHECK_EQ(n, 1);
  for (int lane = 0; lane < 32; ++lane)
    for (int r = 0; r < 4; ++r) {
      CHECK_EQ(ct::c_row(lane, r), lane / 4 + 8 * (r / 2));
      CHECK_EQ(ct::c_col(lane, r), 2 * (lane % 4) + r % 2);
    }
}

TEST(pack_cuda_layout_rejects_bad_input) {
  std::vector<uint16_t> vals(32 * 32, 0), frag(128 * 32, 0);
  std::vector<uint8_t> pos(32 * 32, 0);
  for (size_t i = 0; i < pos.size(); i += 2) pos[i + 1] = 1;
  std::vector<uint32_t> words(4 * 64, 0);
  HiNMView w;
  w.rows = 32; w.cols = 64; w.v = 32; w.kept = 64;
  w.values = make_matrix(vals.data(), DType::f16, 32, 32);
  w.positions = make_matrix(pos.data(), DType::u8, 32, 32);
  const Matrix f = make_matrix(frag.data(), DType::f16, 128, 32), m = make_matrix(words.data(), DType::u32, 4, 64);
  pack_cuda_layout(w, f, m);  // valid
  HiNMView p28 = w;
  p28.pattern = {2, 8};
  CHECK_THROWS(pack_cuda_layout(p28, f, m), std::invalid_argument);
  HiNMView f32 = w;
  f32.values.dtype = DType::f32;
  CHECK_THROWS(pack_cuda_layout(f32, f, m), std::invalid_argument);
  CHECK_THROWS(pack_cuda_layout(w, make_matrix(frag.data(), DType::f16, 96, 32), m), std::invalid_argument);
  CHECK_THROWS(pack_cuda_layout(w, f, make_matrix(words.data(), DType::u32, 4, 32)), std::invalid_argument);
  pos[5] = 0;  // group 2 of slot 0: positions (0, 0)
  CHECK_THROWS(pack_cuda_layout(w, f, m), std::invalid_argument);
}
