// N:M masks and compression in the C++ core, against direct definitions.
#include <limits>
#include <random>
#include <stdexcept>
#include <vector>

#include "check.hpp"
#include "hinm/hinm.hpp"

using namespace hinm;

TEST(nm_mask_keeps_top_n_with_low_index_ties) {
  std::vector<float> s = {1, 5, 5, 0, 3, 3, 3, 3};
  std::vector<uint8_t> mask(8);
  nm_mask(make_matrix(s.data(), DType::f32, 1, 8), {2, 4}, make_matrix(mask.data(), DType::u8, 1, 8));
  std::vector<uint8_t> expect = {0, 1, 1, 0, 1, 1, 0, 0};
  CHECK(mask == expect);
}

TEST(compress_roundtrip_is_bit_exact_for_every_width) {
  std::mt19937 rng(1);
  for (auto [n, m] : std::vector<std::pair<int, int>>{{1, 2}, {2, 4}, {1, 4}, {2, 8}, {4, 8}, {3, 16}}) {
    const int64_t r = 7, k = 4 * m;
    std::vector<float> w(r * k);
    for (auto& x : w) x = std::normal_distribution<float>()(rng);
    const int64_t kc = k / m * n;
    std::vector<float> vals(r * kc), dense(r * k);
    std::vector<uint8_t> pos(r * kc);
    compress_nm(make_matrix(w.data(), DType::f32, r, k), Matrix{}, {n, m},
                make_matrix(vals.data(), DType::f32, r, kc), make_matrix(pos.data(), DType::u8, r, kc));
    decompress_nm(make_matrix(vals.data(), DType::f32, r, kc), make_matrix(pos.data(), DType::u8, r, kc), {n, m},
                  make_matrix(dense.data(), DType::f32, r, k));
    for (int64_t i = 0; i < r; ++i)
      for (int64_t g = 0; g < k / m; ++g) {
        int kept = 0;
        for (int j = 0; j < m; ++j) {
          float d = dense[i * k + g * m + j];
          if (d != 0) { ++kept; CHECK_EQ(d, w[i * k + g * m + j]); }
        }
        CHECK_EQ(kept, n);
      }
  }
}

TEST(bad_patterns_and_shapes_throw) {
  std::vector<float> s(12);
  std::vector<uint8_t> mask(12);
  auto sm = make_matrix(s.data(), DType::f32, 1, 12);
  auto mm = make_matrix(mask.data(), DType::u8, 1, 12);
  CHECK_THROWS(nm_mask(sm, {4, 4}, mm), std::invalid_argument);
  CHECK_THROWS(nm_mask(sm, {0, 4}, mm), std::invalid_argument);
  CHECK_THROWS(nm_mask(sm, {2, 8}, mm), std::invalid_argument);  // 12 % 8 != 0
  s[3] = std::numeric_limits<float>::quiet_NaN();
  CHECK_THROWS(nm_mask(sm, {2, 4}, mm), std::invalid_argument);
  std::vector<uint8_t> bad_pos = {1, 1};  // not strictly increasing
  CHECK_THROWS(validate_nm_positions(make_matrix(bad_pos.data(), DType::u8, 1, 2), {2, 4}), std::invalid_argument);
}

TEST(parallel_for_covers_every_item_once_for_any_thread_count) {
  for (int threads : {1, 2, 3, 8}) {
    set_num_threads(threads);
    std::vector<int> hits(1000, 0);
    parallel_for(1000, 7, [&](int64_t b, int64_t e) { for (int64_t i = b; i < e; ++i) ++hits[i]; });
    for (int h : hits) CHECK_EQ(h, 1);
  }
  set_num_threads(0);
  CHECK_THROWS(parallel_for(10, 1, [](int64_t, int64_t) { throw std::runtime_error("x"); }), std::runtime_error);
}
