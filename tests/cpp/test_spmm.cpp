// spmm / linear against a float64 dense reference, for every kernel variant, pattern, dtype,
// permutation and batch path; thread-count independence; bad inputs.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <stdexcept>
#include <vector>

#include "check.hpp"
#include "hinm/hinm.hpp"

using namespace hinm;

namespace {

// A random HiNM container with its dense equivalent.
struct Case {
  int64_t R, K, Kt;
  int v;
  NMPattern p;
  DType dt;
  std::vector<uint16_t> vals16;
  std::vector<float> vals32;
  std::vector<int8_t> vals8;
  std::vector<uint8_t> pos;
  std::vector<int32_t> cols;
  std::vector<int64_t> perm;
  std::vector<double> dense;  // [R, K]

  HiNMView view() {
    HiNMView w;
    w.rows = R; w.cols = K; w.v = v; w.kept = Kt; w.pattern = p;
    const int64_t kc = Kt / p.m * p.n;
    void* data = dt == DType::f32 ? static_cast<void*>(vals32.data())
                 : dt == DType::i8 ? static_cast<void*>(vals8.data()) : static_cast<void*>(vals16.data());
    w.values = make_matrix(data, dt, w.slots(), kc);
    w.positions = make_matrix(pos.data(), DType::u8, w.slots(), kc);
    w.col_idx = cols.empty() ? nullptr : cols.data();
    w.row_perm = perm.empty() ? nullptr : perm.data();
    return w;
  }
};

Case make_case(std::mt19937& rng, int64_t R, int64_t K, int v, NMPattern p, int64_t Kt, DType dt, bool permute) {
  Case c{R, K, Kt, v, p, dt, {}, {}, {}, {}, {}, {}, {}};
  const int64_t T = (R + v - 1) / v, slots = T * v, kc = Kt / p.m * p.n;
  c.pos.resize(size_t(slots * kc));
  c.vals32.resize(size_t(slots * kc));
  c.vals16.resize(c.vals32.size());
  c.vals8.resize(c.vals32.size());
  c.dense.assign(size_t(R * K), 0.0);
  if (permute || Kt != K) {
    c.cols.resize(size_t(T * Kt));
    for (int64_t t = 0; t < T; ++t) {
      std::vector<int32_t> all(static_cast<size_t>(K));
      std::iota(all.begin(), all.end(), 0);
      if (permute) std::shuffle(all.begin(), all.end(), rng);
      std::copy_n(all.begin(), Kt, c.cols.begin() + t * Kt);
    }
  }
  if (permute) {
    c.perm.resize(size_t(R));
    std::iota(c.perm.begin(), c.perm.end(), 0);
    std::shuffle(c.perm.begin(), c.perm.end(), rng);
  }
  std::normal_distribution<float> nd;
  for (int64_t s = 0; s < slots; ++s)
    for (int64_t g = 0; g < Kt / p.m; ++g) {
      std::vector<int> idx(size_t(p.m));
      std::iota(idx.begin(), idx.end(), 0);
      std::shuffle(idx.begin(), idx.end(), rng);
      std::sort(idx.begin(), idx.begin() + p.n);
      for (int q = 0; q < p.n; ++q) {
        const size_t j = size_t(s * kc + g * p.n + q);
        c.pos[j] = uint8_t(idx[size_t(q)]);
        float x = nd(rng);
        double exact;
        if (dt == DType::f16) { c.vals16[j] = f32_to_f16(x); exact = f16_to_f32(c.vals16[j]); }
        else if (dt == DType::bf16) { c.vals16[j] = f32_to_bf16(x); exact = bf16_to_f32(c.vals16[j]); }
        else if (dt == DType::i8) { c.vals8[j] = int8_t(std::lround(x * 20)); exact = c.vals8[j]; }
        else { c.vals32[j] = x; exact = x; }
        if (s >= R) continue;
        const int64_t t = s / v, local = g * p.m + idx[size_t(q)];
        const int64_t col = c.cols.empty() ? local : c.cols[size_t(t * Kt + local)];
        const int64_t row = c.perm.empty() ? s : c.perm[size_t(s)];
        c.dense[size_t(row * K + col)] = exact;
      }
    }
  return c;
}

// Checks linear (x [N, K]) and spmm (b = xᵀ) against the dense reference, with bias and accumulate.
double max_rel_error(Case& c, int64_t N, std::mt19937& rng, std::vector<float>* keep = nullptr) {
  std::normal_distribution<float> nd;
  std::vector<float> x(size_t(N * c.K)), bt(size_t(c.K * N)), bias(size_t(c.R)), y(size_t(N * c.R)),
      z(size_t(c.R * N));
  for (auto& e : x) e = nd(rng);
  for (auto& e : bias) e = nd(rng);
  for (int64_t b = 0; b < N; ++b)
    for (int64_t k = 0; k < c.K; ++k) bt[size_t(k * N + b)] = x[size_t(b * c.K + k)];
  for (auto& e : y) e = 1.0f;  // accumulate onto ones
  const HiNMView w = c.view();
  linear(make_matrix(x.data(), DType::f32, N, c.K), w, bias.data(), make_matrix(y.data(), DType::f32, N, c.R), true);
  spmm(w, make_matrix(bt.data(), DType::f32, c.K, N), make_matrix(z.data(), DType::f32, c.R, N), false);
  double worst = 0;
  for (int64_t b = 0; b < N; ++b)
    for (int64_t r = 0; r < c.R; ++r) {
      double ref = 0, scale = 1e-3;
      for (int64_t k = 0; k < c.K; ++k) {
        ref += c.dense[size_t(r * c.K + k)] * x[size_t(b * c.K + k)];
        scale += std::fabs(c.dense[size_t(r * c.K + k)] * x[size_t(b * c.K + k)]);
      }
      worst = std::max(worst, std::fabs(y[size_t(b * c.R + r)] - (ref + bias[size_t(r)] + 1.0)) / scale);
      worst = std::max(worst, std::fabs(z[size_t(r * N + b)] - ref) / scale);
    }
  if (keep) { *keep = y; keep->insert(keep->end(), z.begin(), z.end()); }
  return worst;
}

}  // namespace

TEST(spmm_matches_dense_reference_for_every_variant_pattern_and_dtype) {
  std::mt19937 rng(7);
  const std::vector<NMPattern> patterns = {{1, 2}, {2, 4}, {1, 4}, {2, 8}, {4, 8}, {1, 8}, {3, 16}};
  const DType dtypes[] = {DType::f32, DType::f16, DType::bf16, DType::i8};
  for (const char* isa : {"generic", "avx2", ""}) {
    spmm_force_isa(isa);
    int i = 0;
    for (NMPattern p : patterns)
      for (DType dt : dtypes) {
        ++i;
        const int v = (i % 3 == 0) ? 32 : (i % 3 == 1) ? 64 : 128;
        const int64_t R = v * 2 + 5, K = p.m * 12;
        const bool hinm = i % 2 == 0;
        Case c = make_case(rng, R, K, hinm ? v : int(R), p, hinm ? K / 2 / p.m * p.m : K, dt, i % 4 < 2);
        for (int64_t N : {1, 3, 5, 17, 70}) {
          const double err = max_rel_error(c, N, rng);
          if (!(err < 1e-5)) {
            CHECK(err < 1e-5);
            std::fprintf(stderr, "  isa=%s %d:%d dtype=%s N=%lld err=%g\n", isa, p.n, p.m, dtype_name(dt),
                         (long long)N, err);
          }
        }
      }
  }
  spmm_force_isa("");
}

TEST(spmm_is_identical_for_any_thread_count) {
  std::mt19937 rng(3);
  Case c = make_case(rng, 300, 256, 64, {2, 4}, 128, DType::f32, true);
  for (int64_t N : {1, 6, 40}) {
    std::vector<float> one, two;
    set_num_threads(1);
    std::mt19937 r1(N);
    max_rel_error(c, N, r1, &one);
    set_num_threads(2);
    std::mt19937 r2(N);
    max_rel_error(c, N, r2, &two);
    CHECK(one == two);
  }
  set_num_threads(0);
}

TEST(rows_pack_gives_the_same_bits) {
  std::mt19937 rng(5);
  for (DType dt : {DType::f32, DType::f16, DType::i8}) {
    // 45 rows in tiles of 12: blocks of 8 slots start inside tiles; 66 values per row: 4 whole steps + a tail
    Case c = make_case(rng, 45, 200, 12, {2, 4}, 132, dt, true);
    const HiNMView w = c.view();
    const int64_t size = rows_pack_size(w);
    CHECK(size == w.slots() / 8 * (66 / 16) * 128);
    CHECK(rows_pack_position_bytes(w) == size / 4);  // 2:4: 2-bit positions
    std::vector<char> pv(size_t(size) * size_t(dtype_size(dt)));
    std::vector<uint8_t> pp(static_cast<size_t>(size / 4 + 1));
    pack_rows(w, pv.data(), pp.data() + 1);  // positions at an odd address: read bytewise-safe
    const RowsPack pack{pv.data(), pp.data() + 1};
    // 13-70: the panel path, which reads the pack for float32 (16, 24 and 2 x 64 lanes)
    for (int64_t N : {1, 3, 4, 12, 13, 20, 70}) {
      std::vector<float> x(size_t(N * c.K)), plain(size_t(N * c.R)), packed(size_t(N * c.R));
      for (auto& e : x) e = std::uniform_real_distribution<float>(-1, 1)(rng);
      const Matrix xm = make_matrix(x.data(), DType::f32, N, c.K);
      linear(xm, w, nullptr, make_matrix(plain.data(), DType::f32, N, c.R));
      linear(xm, w, nullptr, make_matrix(packed.data(), DType::f32, N, c.R), false, nullptr, &pack);
      CHECK(plain == packed);
    }
  }
  Case c14 = make_case(rng, 40, 64, 16, {1, 4}, 64, DType::f32, false);
  CHECK(rows_pack_size(c14.view()) == 0);  // no pack for m != 2n
  Case c48 = make_case(rng, 40, 64, 16, {4, 8}, 64, DType::f32, false);
  CHECK(rows_pack_position_bytes(c48.view()) == rows_pack_size(c48.view()));  // byte positions for m > 4
  for (int m : {4, 8}) {  // a position >= m would index activations out of the group: refused
    Case bad = make_case(rng, 16, 64, 16, {m / 2, m}, 64, DType::f32, false);
    HiNMView bw = bad.view();
    const_cast<uint8_t*>(bw.positions.row<const uint8_t>(9))[17] = uint8_t(m);
    std::vector<float> pv(size_t(rows_pack_size(bw)));
    std::vector<uint8_t> pp(size_t(rows_pack_position_bytes(bw)));
    try {
      pack_rows(bw, pv.data(), pp.data());
      CHECK(!"position >= m accepted");
    } catch (const std::invalid_argument& e) {
      CHECK(std::string(e.what()).find("group " + std::to_string(17 / (m / 2)) + " of row 9 ") != std::string::npos);
    }
  }
}

TEST(position_words_give_the_same_bits) {
  std::mt19937 rng(9);
  for (NMPattern p : {NMPattern{2, 4}, NMPattern{1, 2}}) {
    // 45 rows in tiles of 12, 66 values per row (2:4; 1:2: 33): whole steps of 16 and a tail
    Case c = make_case(rng, 45, 200, 12, p, 132, DType::f32, true);
    const HiNMView w = c.view();
    CHECK(spmm_masks_are_words(w) && spmm_masks_cols(w) == w.compressed_cols() / 16);
    std::vector<uint32_t> words(size_t(w.slots() * spmm_masks_cols(w)));
    const Matrix wm = make_matrix(words.data(), DType::u32, w.slots(), spmm_masks_cols(w));
    build_spmm_masks(w, wm);
    for (int64_t s = 0; s < w.slots(); ++s)
      for (int64_t j = 0; j < spmm_masks_cols(w) * 16; ++j)
        CHECK(((words[size_t(s * spmm_masks_cols(w) + j / 16)] >> (2 * (j % 16))) & 3u) ==
              c.pos[size_t(s * w.compressed_cols() + j)]);
    for (int64_t N : {1, 3, 4, 12, 20}) {
      std::vector<float> x(size_t(N * c.K)), plain(size_t(N * c.R)), with_words(size_t(N * c.R));
      for (auto& e : x) e = std::uniform_real_distribution<float>(-1, 1)(rng);
      const Matrix xm = make_matrix(x.data(), DType::f32, N, c.K);
      linear(xm, w, nullptr, make_matrix(plain.data(), DType::f32, N, c.R));
      linear(xm, w, nullptr, make_matrix(with_words.data(), DType::f32, N, c.R), false, &wm);
      CHECK(plain == with_words);
    }
    std::vector<uint16_t> wrong(size_t(w.slots() * spmm_masks_cols(w)));  // bit masks where words are due
    const Matrix wrong_m = make_matrix(wrong.data(), DType::u16, w.slots(), spmm_masks_cols(w));
    std::vector<float> x(size_t(c.K)), y(size_t(c.R));
    CHECK_THROWS(linear(make_matrix(x.data(), DType::f32, 1, c.K), w, nullptr, make_matrix(y.data(), DType::f32, 1, c.R),
                        false, &wrong_m),
                 std::invalid_argument);
  }
  Case c48 = make_case(rng, 40, 64, 16, {4, 8}, 64, DType::f32, false);
  CHECK(!spmm_masks_are_words(c48.view()) && spmm_masks_cols(c48.view()) == 0);  // reads its byte positions
  Case c14 = make_case(rng, 40, 64, 16, {1, 4}, 64, DType::f32, false);
  CHECK(!spmm_masks_are_words(c14.view()) && spmm_masks_cols(c14.view()) == spmm_mask_blocks(c14.view()));
}

TEST(spmm_rejects_bad_inputs) {
  std::mt19937 rng(5);
  Case c = make_case(rng, 64, 32, 64, {2, 4}, 32, DType::f32, false);
  HiNMView w = c.view();
  std::vector<float> x(3 * 32), y(3 * 64);
  const Matrix xm = make_matrix(x.data(), DType::f32, 3, 32), ym = make_matrix(y.data(), DType::f32, 3, 64);
  CHECK_THROWS(linear(make_matrix(x.data(), DType::f32, 3, 31), w, nullptr, ym), std::invalid_argument);
  CHECK_THROWS(linear(xm, w, nullptr, make_matrix(y.data(), DType::f32, 3, 63)), std::invalid_argument);
  CHECK_THROWS(linear(make_matrix(x.data(), DType::f16, 3, 32), w, nullptr, ym), std::invalid_argument);
  // out sharing memory with an input (the kernels read it while writing out)
  std::vector<float> shared(3 * 64 + 64);
  const Matrix in_shared = make_matrix(shared.data(), DType::f32, 3, 32, 64);
  CHECK_THROWS(linear(in_shared, w, nullptr, make_matrix(shared.data() + 64, DType::f32, 3, 64)), std::invalid_argument);
  CHECK_THROWS(linear(xm, w, shared.data() + 100, make_matrix(shared.data(), DType::f32, 3, 64)), std::invalid_argument);
  CHECK_THROWS(spmm(w, make_matrix(shared.data(), DType::f32, 32, 3), make_matrix(shared.data() + 60, DType::f32, 64, 3)),
               std::invalid_argument);
  linear(in_shared, w, shared.data() + 192, make_matrix(y.data(), DType::f32, 3, 64));  // disjoint: fine
  HiNMView bad = w;
  bad.kept = 30;
  CHECK_THROWS(linear(xm, bad, nullptr, ym), std::invalid_argument);
  std::vector<int64_t> perm(64, 0);
  bad = w;
  bad.row_perm = perm.data();
  CHECK_THROWS(linear(xm, bad, nullptr, ym), std::invalid_argument);
  std::vector<int32_t> cols(32, 40);
  bad = w;
  bad.col_idx = cols.data();
  CHECK_THROWS(linear(xm, bad, nullptr, ym), std::invalid_argument);
  c.pos[1] = c.pos[0];  // not strictly increasing: the mask builder refuses it
  std::vector<uint16_t> masks(size_t(64 * spmm_mask_blocks(w)));
  CHECK_THROWS(build_spmm_masks(w, make_matrix(masks.data(), DType::u16, 64, spmm_mask_blocks(w))),
               std::invalid_argument);
  CHECK_THROWS(spmm_force_isa("sse9"), std::invalid_argument);
}
