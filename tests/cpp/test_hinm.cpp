// HiNM masks and container in the C++ core: structure of the mask, bit-exact round trip, validation.
#include <numeric>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "check.hpp"
#include "hinm/hinm.hpp"

using namespace hinm;

namespace {
struct Fixture {
  int64_t r = 37, k = 32, kt = 16;
  int v = 8;
  NMPattern p{2, 4};
  std::vector<float> w;
  Fixture() : w(r * k) {
    std::mt19937 rng(3);
    for (auto& x : w) x = std::normal_distribution<float>()(rng);
  }
  int64_t tiles() const { return (r + v - 1) / v; }
  int64_t slots() const { return tiles() * v; }
  int64_t kc() const { return kt / p.m * p.n; }
  // A container over the caller's buffers ([slots, kc] values and positions); col_idx and
  // row_perm are left for the test to set.
  HiNMView view(std::vector<float>& values, std::vector<uint8_t>& pos) const {
    HiNMView out;
    out.rows = r; out.cols = k; out.v = v; out.kept = kt; out.pattern = p;
    out.values = make_matrix(values.data(), DType::f32, slots(), kc());
    out.positions = make_matrix(pos.data(), DType::u8, slots(), kc());
    return out;
  }
};
}  // namespace

TEST(hinm_mask_has_kt_columns_per_tile_and_n_per_group) {
  Fixture f;
  std::vector<float> s(f.w.size());
  for (size_t i = 0; i < s.size(); ++i) s[i] = std::abs(f.w[i]);
  std::vector<uint8_t> mask(f.w.size());
  std::vector<int32_t> kept(f.tiles() * f.kt);
  hinm_mask(make_matrix(s.data(), DType::f32, f.r, f.k), f.v, f.kt, f.p, nullptr, nullptr,
            make_matrix(mask.data(), DType::u8, f.r, f.k), kept.data());
  for (int64_t row = 0; row < f.r; ++row) {
    int total = 0;
    const int32_t* cols = kept.data() + (row / f.v) * f.kt;
    for (int64_t g = 0; g < f.kt / 4; ++g) {
      int in_group = 0;
      for (int j = 0; j < 4; ++j) in_group += mask[row * f.k + cols[g * 4 + j]];
      CHECK_EQ(in_group, 2);
      total += in_group;
    }
    int all = 0;
    for (int64_t c = 0; c < f.k; ++c) all += mask[row * f.k + c];
    CHECK_EQ(all, total);
  }
}

TEST(hinm_compress_roundtrip_with_permutations) {
  Fixture f;
  std::vector<int64_t> row_perm(f.r);
  std::iota(row_perm.begin(), row_perm.end(), 0);
  std::shuffle(row_perm.begin(), row_perm.end(), std::mt19937(5));
  const int64_t kc = f.kc();
  std::vector<float> values(f.slots() * kc), dense(f.r * f.k);
  std::vector<uint8_t> pos(f.slots() * kc);
  std::vector<int32_t> col_idx(f.tiles() * f.kt);
  HiNMView view = f.view(values, pos);
  view.row_perm = row_perm.data();
  hinm_compress(make_matrix(f.w.data(), DType::f32, f.r, f.k), Matrix{}, view, col_idx.data(), nullptr);
  view.col_idx = col_idx.data();
  hinm_decompress(view, make_matrix(dense.data(), DType::f32, f.r, f.k));
  int64_t nonzero = 0;
  for (size_t i = 0; i < dense.size(); ++i)
    if (dense[i] != 0) { ++nonzero; CHECK_EQ(dense[i], f.w[i]); }
  CHECK_EQ(nonzero, f.r * kc);
  col_idx[3] = col_idx[2];  // a duplicate column is a corrupted container
  CHECK_THROWS(hinm_validate(view), std::invalid_argument);
  row_perm[0] = row_perm[1];
  CHECK_THROWS(hinm_compress(make_matrix(f.w.data(), DType::f32, f.r, f.k), Matrix{}, view, col_idx.data(), nullptr),
               std::invalid_argument);
}

TEST(hinm_validate_names_each_corruption) {
  Fixture f;
  std::vector<float> values(f.slots() * f.kc());
  std::vector<uint8_t> pos(f.slots() * f.kc());
  std::vector<int32_t> col_idx(f.tiles() * f.kt);
  HiNMView view = f.view(values, pos);
  hinm_compress(make_matrix(f.w.data(), DType::f32, f.r, f.k), Matrix{}, view, col_idx.data(), nullptr);
  view.col_idx = col_idx.data();
  hinm_validate(view);
  auto rejects = [&](auto edit, const char* needle) {
    auto v2 = values; auto p2 = pos; auto c2 = col_idx;
    edit(v2, p2, c2);
    HiNMView broken = f.view(v2, p2);
    broken.col_idx = c2.data();
    try {
      hinm_validate(broken);
      CHECK(!"corruption accepted");
    } catch (const std::invalid_argument& e) {
      CHECK(std::string(e.what()).find(needle) != std::string::npos);
    }
  };
  rejects([&](auto&, auto&, auto& c) { c[5] = int32_t(f.k); }, "out of range");
  rejects([&](auto&, auto&, auto& c) { c[f.kt + 1] = c[f.kt]; }, "twice");
  rejects([&](auto&, auto& p, auto&) { p[1] = p[0]; }, "strictly increasing");
  rejects([&](auto&, auto& p, auto&) { p[2] = 4; }, "strictly increasing");
  rejects([&](auto& v, auto&, auto&) { v[(f.slots() - 1) * f.kc()] = 1.f; }, "padding slot");
  std::vector<int64_t> bad_perm(f.r, 0);
  view.row_perm = bad_perm.data();
  CHECK_THROWS(hinm_validate(view), std::invalid_argument);
}
