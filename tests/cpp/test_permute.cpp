// Assignment solvers, balanced k-means and the permutation search in the C++ core.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <stdexcept>
#include <vector>

#include "check.hpp"
#include "hinm/hinm.hpp"
#include "../../cpp/src/permute_anneal.hpp"  // internal: the annealing stage's own bookkeeping

using namespace hinm;

namespace {
double brute_force_min(const std::vector<double>& c, int n) {
  std::vector<int> p(n);
  std::iota(p.begin(), p.end(), 0);
  double best = 1e300;
  do {
    double s = 0;
    for (int i = 0; i < n; ++i) s += c[i * n + p[i]];
    best = std::min(best, s);
  } while (std::next_permutation(p.begin(), p.end()));
  return best;
}
}  // namespace

TEST(linear_assignment_matches_brute_force) {
  std::mt19937 rng(3);
  for (int n = 1; n <= 7; ++n)
    for (int rep = 0; rep < 5; ++rep) {
      std::vector<double> c(n * n);
      for (auto& x : c) x = double(rng() % 5);  // many ties
      for (bool reduced : {false, true}) {
        auto col = linear_assignment(c.data(), n, n, false, reduced);
        double s = 0;
        std::vector<int> seen(n, 0);
        for (int i = 0; i < n; ++i) { s += c[i * n + col[i]]; seen[col[i]]++; }
        CHECK(std::all_of(seen.begin(), seen.end(), [](int k) { return k == 1; }));
        CHECK(std::fabs(s - brute_force_min(c, n)) < 1e-9);
      }
    }
}

// The reduced-dual start reaches the same optimum on larger, rectangular and tied problems.
TEST(linear_assignment_reduced_start_same_optimum) {
  std::mt19937 rng(11);
  for (auto [r, c] : {std::pair{40, 40}, std::pair{30, 45}, std::pair{45, 30}, std::pair{64, 64}})
    for (int rep = 0; rep < 4; ++rep) {
      std::vector<double> cost(r * c);
      // rep 0/1: rank-one-like costs (every row prefers the same columns) + noise; 2/3: integer ties
      std::vector<double> a(r), b(c);
      for (auto& x : a) x = std::uniform_real_distribution<double>(0, 10)(rng);
      for (auto& x : b) x = std::uniform_real_distribution<double>(0, 10)(rng);
      for (int i = 0; i < r; ++i)
        for (int j = 0; j < c; ++j)
          cost[i * c + j] = rep < 2 ? -a[i] * b[j] + std::uniform_real_distribution<double>(0, 1)(rng) : double(rng() % 4);
      for (bool maximize : {false, true}) {
        auto total = [&](const std::vector<int64_t>& col) {
          double s = 0;
          std::vector<int> seen(c, 0);
          for (int i = 0; i < r; ++i)
            if (col[i] >= 0) { s += cost[i * c + col[i]]; seen[col[i]]++; }
          CHECK(std::all_of(seen.begin(), seen.end(), [](int k) { return k <= 1; }));
          CHECK(std::count(col.begin(), col.end(), int64_t(-1)) == std::max(0, r - c));
          return s;
        };
        const double plain = total(linear_assignment(cost.data(), r, c, maximize));
        const double reduced = total(linear_assignment(cost.data(), r, c, maximize, true));
        CHECK(std::fabs(plain - reduced) < 1e-9 * std::max(1.0, std::fabs(plain)));
      }
    }
}

// capacitated_assignment fills every bin to its capacity at the cost of the plain assignment in
// which each bin is repeated capacity times.
static void check_capacitated_is_optimal(const std::vector<double>& c, int rows, int bins, const std::vector<int64_t>& cap) {
  auto bin = capacitated_assignment(c.data(), rows, bins, cap);
  std::vector<int64_t> count(bins, 0);
  double s = 0;
  for (int r = 0; r < rows; ++r) { count[bin[r]]++; s += c[r * bins + bin[r]]; }
  CHECK(count == cap);
  std::vector<double> expanded(rows * rows);
  for (int r = 0; r < rows; ++r)
    for (int b = 0, col = 0; b < bins; ++b)
      for (int k = 0; k < cap[b]; ++k, ++col) expanded[r * rows + col] = c[r * bins + b];
  auto col = linear_assignment(expanded.data(), rows, rows);
  double s2 = 0;
  for (int r = 0; r < rows; ++r) s2 += expanded[r * rows + col[r]];
  CHECK(std::fabs(s - s2) < 1e-9);
}

TEST(capacitated_assignment_equals_expanded_assignment) {
  std::mt19937 rng(5);
  const int rows = 12, bins = 3;
  std::vector<double> c(rows * bins);
  for (auto& x : c) x = std::uniform_real_distribution<double>(-1, 1)(rng);
  check_capacitated_is_optimal(c, rows, bins, {5, 4, 3});
  CHECK_THROWS(capacitated_assignment(c.data(), rows, bins, {5, 5, 5}), std::invalid_argument);
}

// Larger, with ties (integer costs): members move along many augmenting paths.
TEST(capacitated_assignment_optimal_with_ties) {
  std::mt19937 rng(9);
  const int rows = 48, bins = 6;
  std::vector<double> c(rows * bins);
  for (auto& x : c) x = double(rng() % 5);
  check_capacitated_is_optimal(c, rows, bins, {10, 8, 8, 8, 8, 6});
}

TEST(balanced_kmeans_gives_equal_clusters) {
  std::mt19937 rng(7);
  std::vector<double> pts(30 * 4);
  for (auto& x : pts) x = std::normal_distribution<double>()(rng);
  auto a = balanced_kmeans(pts.data(), 5, 6, 4, 42);
  auto b = balanced_kmeans(pts.data(), 5, 6, 4, 42);
  CHECK(a == b);
  std::vector<int> count(5, 0);
  for (int l : a) count[l]++;
  CHECK(std::all_of(count.begin(), count.end(), [](int k) { return k == 6; }));
}

// search_permutation(m, v = 32, Kt = 32, 2:4) on 1 and 2 threads: the same result, whose retained
// saliency is what hinm_retained recounts. Returns the 1-thread result.
static PermuteResult search_on_one_and_two_threads(const Matrix& m, const PermuteOptions& opt) {
  set_num_threads(1);
  auto a = search_permutation(m, 32, 32, {2, 4}, opt);
  set_num_threads(2);
  auto b = search_permutation(m, 32, 32, {2, 4}, opt);
  set_num_threads(0);
  CHECK(a.row_perm == b.row_perm);
  CHECK(a.col_orders == b.col_orders);
  CHECK(a.retained == b.retained);
  CHECK(a.retained == hinm_retained(m, 32, 32, {2, 4}, a.row_perm, a.col_orders));
  return a;
}

TEST(search_is_thread_independent_and_consistent) {
  std::mt19937 rng(9);
  const int64_t r = 96, k = 64;
  std::vector<float> s(r * k);
  for (auto& x : s) x = std::uniform_real_distribution<float>(0, 1)(rng);
  auto m = make_matrix(s.data(), DType::f32, r, k);
  PermuteOptions opt;
  opt.seed = 4;
  auto a = search_on_one_and_two_threads(m, opt);
  opt.method = PermuteMethod::identity;
  CHECK(search_permutation(m, 32, 32, {2, 4}, opt).retained < a.retained);
  for (size_t i = 1; i < a.history.size(); ++i) CHECK(a.history[i].retained >= a.history[i - 1].retained);
  CHECK_THROWS(search_permutation(m, 32, 30, {2, 4}, opt), std::invalid_argument);
  CHECK_THROWS(parse_permute_method("tetris"), std::invalid_argument);
  s[5] = std::nanf("");
  CHECK_THROWS(search_permutation(m, 32, 32, {2, 4}, opt), std::invalid_argument);
}

TEST(row_swaps_reach_brute_force_partition) {
  // 6 rows in 3 tiles of 2, K = 8, Kt = 4 = m: only the partition matters; with the other stages
  // off, the row swaps must reach the best partition found by enumerating all of them.
  std::mt19937 rng(3);
  int improved = 0;
  for (int trial = 0; trial < 6; ++trial) {
    std::vector<double> s(6 * 8);
    for (auto& x : s) x = std::pow(std::uniform_real_distribution<double>(0, 1)(rng), 3);
    auto m = make_matrix(s.data(), DType::f64, 6, 8);
    std::vector<int64_t> perm(6);
    std::iota(perm.begin(), perm.end(), 0);
    double best = 0;
    do best = std::max(best, hinm_retained(m, 2, 4, {2, 4}, perm, {}));
    while (std::next_permutation(perm.begin(), perm.end()));
    PermuteOptions opt;
    opt.ocp_fail_limit = 0;
    opt.cluster_rounds = 0;
    opt.anneal_moves = 0;
    opt.refine_rounds = 0;
    auto res = search_permutation(m, 2, 4, {2, 4}, opt);
    const double ident = res.history.front().retained;
    CHECK(std::fabs(res.retained - best) <= 1e-12 * best);
    for (size_t i = 1; i < res.history.size(); ++i) CHECK(res.history[i].retained >= res.history[i - 1].retained);
    if (best > ident * (1 + 1e-9)) {
      ++improved;
      CHECK(res.history.back().stage == "row_swap");
    }
  }
  CHECK(improved >= 3);
}

TEST(anneal_stage_is_thread_independent_and_keeps_invariants) {
  // 8 tiles of skewed random rows; only the clustering and the annealing move rows here.
  std::mt19937 rng(12);
  const int64_t r = 256, k = 64;
  std::vector<double> s(r * k);
  for (auto& x : s) x = std::pow(std::uniform_real_distribution<double>(0, 1)(rng), 3);
  auto m = make_matrix(s.data(), DType::f64, r, k);
  PermuteOptions opt;
  opt.seed = 5;
  opt.ocp_fail_limit = 0;
  opt.refine_rounds = 0;
  opt.swap_rounds = 0;
  opt.anneal_moves = 400;
  auto a = search_on_one_and_two_threads(m, opt);
  CHECK(std::any_of(a.history.begin(), a.history.end(), [](const auto& h) { return h.stage == "anneal"; }));
  for (size_t i = 1; i < a.history.size(); ++i) CHECK(a.history[i].retained >= a.history[i - 1].retained);
  PermuteOptions off = opt;
  off.anneal_moves = 0;
  CHECK(search_permutation(m, 32, 32, {2, 4}, off).retained < a.retained);
  off.anneal_moves = -1;
  CHECK_THROWS(search_permutation(m, 32, 32, {2, 4}, off), std::invalid_argument);
}

TEST(anneal_bookkeeping_matches_a_recount) {
  // The stage keeps every row's top-k per tile up to date through kept-set changes (one column
  // pair at a time from the rows' rankings); its own total must equal a recount from scratch, and
  // never fall below the start. Patterns with and without that path (3:4 with Kt = 4 has no
  // (k+2)-th column), ties (rounded scores), a partial last tile.
  struct Case { int64_t r, k, v, kt; int n, m; };
  const Case cases[] = {{200, 64, 32, 32, 2, 4}, {192, 64, 32, 16, 2, 4}, {160, 48, 32, 24, 1, 4},
                        {160, 48, 32, 4, 3, 4}, {96, 32, 16, 16, 2, 8}};
  std::mt19937 rng(21);
  for (const Case& c : cases) {
    std::vector<double> s(c.r * c.k);
    for (auto& x : s) x = std::round(std::pow(std::uniform_real_distribution<double>(0, 1)(rng), 3) * 50) / 50;
    permute::Problem p;
    p.s = s.data();
    p.R = c.r; p.K = c.k; p.v = c.v; p.Kt = c.kt; p.n = c.n; p.m = c.m;
    std::vector<int64_t> slots(c.r);
    std::iota(slots.begin(), slots.end(), 0);
    const double start = permute::topk_objective_of(p, slots);
    permute::AnnealOptions ao;
    ao.moves_per_row = 300;
    ao.temperature = 0.05;
    ao.seed = 7;
    double tracked = 0;
    const int64_t accepted = permute::anneal_rows(p, slots, ao, permute::Deadline{}, &tracked);
    const double recount = permute::topk_objective_of(p, slots);
    CHECK(std::fabs(tracked - recount) <= 1e-9 * recount);
    CHECK(recount >= start * (1 - 1e-12));
    CHECK(accepted > 0);
    CHECK(recount > start);
    std::vector<int64_t> sorted = slots;
    std::sort(sorted.begin(), sorted.end());
    for (int64_t i = 0; i < c.r; ++i) CHECK(sorted[i] == i);
  }
}
