// Greedy TASD in the C++ core: patterns hold, terms are disjoint pieces of the input, same-m
// series collapse exactly, and bad series throw.
#include <random>
#include <stdexcept>
#include <vector>

#include "check.hpp"
#include "hinm/hinm.hpp"

using namespace hinm;

namespace {

struct Owned {
  std::vector<float> values;
  std::vector<uint8_t> positions;
};

// Dense sum of the terms of tasd(w, series), and the raw containers.
std::vector<float> tasd_dense(const std::vector<float>& w, int64_t r, int64_t k, const std::vector<NMPattern>& series,
                              double threshold = 0.0, std::vector<Owned>* keep = nullptr) {
  std::vector<Owned> owned(series.size());
  std::vector<TASDTerm> terms;
  for (size_t i = 0; i < series.size(); ++i) {
    const int64_t kc = series[i].compressed_cols(k);
    owned[i].values.assign(r * kc, -1.f);
    owned[i].positions.assign(r * kc, 255);
    terms.push_back({series[i], make_matrix(owned[i].values.data(), DType::f32, r, kc),
                     make_matrix(owned[i].positions.data(), DType::u8, r, kc)});
  }
  tasd_decompose(make_matrix(const_cast<float*>(w.data()), DType::f32, r, k), Matrix{}, terms, threshold);
  std::vector<float> sum(r * k, 0.f), one(r * k);
  for (const TASDTerm& t : terms) {
    decompress_nm(t.values, t.positions, t.pattern, make_matrix(one.data(), DType::f32, r, k));
    for (int64_t i = 0; i < r * k; ++i) sum[i] += one[i];
  }
  if (keep) *keep = std::move(owned);
  return sum;
}

std::vector<float> random_matrix(int64_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::vector<float> w(n);
  for (auto& x : w) x = std::normal_distribution<float>()(rng);
  return w;
}

}  // namespace

TEST(same_m_series_collapse_exactly) {
  const int64_t r = 9, k = 32;
  auto w = random_matrix(r * k, 3);
  w[5] = w[6] = w[7] = 0.5f;  // ties
  CHECK(tasd_dense(w, r, k, {{1, 8}, {1, 8}}) == tasd_dense(w, r, k, {{2, 8}}));
  CHECK(tasd_dense(w, r, k, {{2, 4}, {1, 4}}) == tasd_dense(w, r, k, {{3, 4}}));
  CHECK(tasd_dense(w, r, k, {{1, 16}, {2, 16}, {1, 16}}) == tasd_dense(w, r, k, {{4, 16}}));
}

TEST(terms_are_disjoint_pieces_of_the_input) {
  const int64_t r = 5, k = 48;
  auto w = random_matrix(r * k, 4);
  std::vector<Owned> terms;
  auto sum = tasd_dense(w, r, k, {{2, 4}, {1, 8}, {1, 16}}, 0.0, &terms);
  int64_t kept = 0;
  for (int64_t i = 0; i < r * k; ++i) {
    if (sum[i] != 0.f) { CHECK_EQ(sum[i], w[i]); ++kept; }
  }
  CHECK_EQ(kept, r * (k / 2 + k / 8 + k / 16));
  validate_nm_positions(make_matrix(terms[1].positions.data(), DType::u8, r, k / 8), {1, 8});
  // Two dense terms of 2:4 cover everything: exact.
  CHECK(tasd_dense(w, r, k, {{2, 4}, {2, 4}}) == w);
}

TEST(over_full_series_takes_zeros_not_duplicates) {
  const int64_t r = 2, k = 8;
  auto w = random_matrix(r * k, 5);
  CHECK(tasd_dense(w, r, k, {{3, 4}, {3, 4}}) == w);  // second term: 1 value + 2 zeros per group
}

TEST(threshold_zeroes_small_values_before_extraction) {
  std::vector<float> w = {0.1f, -0.2f, 3.f, 0.05f, 1.f, 2.f, -0.3f, 0.f};
  auto sum = tasd_dense(w, 1, 8, {{2, 4}}, 0.25);
  std::vector<float> expect = {0.f, 0.f, 3.f, 0.f, 1.f, 2.f, 0.f, 0.f};
  CHECK(sum == expect);
}

TEST(bad_series_throw) {
  std::vector<float> w(12, 1.f);
  CHECK_THROWS(check_tasd_series({}, 12), std::invalid_argument);
  CHECK_THROWS(check_tasd_series({{2, 4}, {1, 8}}, 12), std::invalid_argument);
  CHECK_THROWS(check_tasd_series({{4, 4}}, 12), std::invalid_argument);
  CHECK_THROWS(tasd_dense(w, 1, 12, {{2, 4}}, -1.0), std::invalid_argument);
  std::vector<float> vals(6);
  std::vector<uint8_t> pos(5);  // wrong width
  CHECK_THROWS(tasd_decompose(make_matrix(w.data(), DType::f32, 1, 12), Matrix{},
                              {{{2, 4}, make_matrix(vals.data(), DType::f32, 1, 6),
                                make_matrix(pos.data(), DType::u8, 1, 5)}}),
               std::invalid_argument);
}
