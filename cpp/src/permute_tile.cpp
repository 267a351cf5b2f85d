#include "permute_tile.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <tuple>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "hinm/parallel.hpp"
#include "hinm/permute_lap.hpp"

namespace hinm::permute {

namespace {

// acc[k] += max(0, x - t[k]) for k < n.
HINM_SIMD_CLONES void add_excess_over(double* __restrict acc, double x, const double* __restrict t, int64_t n) {
  for (int64_t k = 0; k < n; ++k) acc[k] += std::max(0.0, x - t[k]);
}

// acc[k] += max(0, x[k] - t) for k < n.
HINM_SIMD_CLONES void add_excess_of(double* __restrict acc, const double* __restrict x, double t, int64_t n) {
  for (int64_t k = 0; k < n; ++k) acc[k] += std::max(0.0, x[k] - t);
}

}  // namespace

double split_sum(const double* a, const double* b, double* sum, int64_t K, double lo, double hi, double* band,
                 int64_t& n_band, int64_t& n_below) {
  int64_t c = 0, n = 0, nb = 0;
  double acc[4] = {0, 0, 0, 0};
#if defined(__SSE2__)
  // Lanes (0, 1) and (2, 3) in two registers: the same additions as the scalar loop below.
  static constexpr int8_t kBits[16] = {0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4};
  __m128d acc01 = _mm_setzero_pd(), acc23 = _mm_setzero_pd();
  const __m128d vlo = _mm_set1_pd(lo), vhi = _mm_set1_pd(hi);
  for (; c + 4 <= K; c += 4) {
    const __m128d x01 = _mm_add_pd(_mm_loadu_pd(a + c), _mm_loadu_pd(b + c));
    const __m128d x23 = _mm_add_pd(_mm_loadu_pd(a + c + 2), _mm_loadu_pd(b + c + 2));
    _mm_storeu_pd(sum + c, x01);
    _mm_storeu_pd(sum + c + 2, x23);
    const __m128d u01 = _mm_cmplt_pd(x01, vlo), u23 = _mm_cmplt_pd(x23, vlo);
    acc01 = _mm_add_pd(acc01, _mm_and_pd(u01, x01));
    acc23 = _mm_add_pd(acc23, _mm_and_pd(u23, x23));
    n += kBits[_mm_movemask_pd(u01) | (_mm_movemask_pd(u23) << 2)];
    const int in = _mm_movemask_pd(_mm_andnot_pd(u01, _mm_cmple_pd(x01, vhi))) |
                   (_mm_movemask_pd(_mm_andnot_pd(u23, _mm_cmple_pd(x23, vhi))) << 2);
    if (in) {
      for (int l = 0; l < 4; ++l) {
        band[nb] = sum[c + l];
        nb += (in >> l) & 1;
      }
    }
  }
  _mm_storeu_pd(acc, acc01);
  _mm_storeu_pd(acc + 2, acc23);
#else
  for (; c + 4 <= K; c += 4)
    for (int l = 0; l < 4; ++l) {
      const double x = a[c + l] + b[c + l];
      sum[c + l] = x;
      if (x < lo) { acc[l] += x; ++n; } else if (x <= hi) { band[nb++] = x; }
    }
#endif
  for (; c < K; ++c) {
    const double x = a[c] + b[c];
    sum[c] = x;
    if (x < lo) { acc[0] += x; ++n; } else if (x <= hi) { band[nb++] = x; }
  }
  n_below = n;
  n_band = nb;
  return (acc[0] + acc[1]) + (acc[2] + acc[3]);
}

double topn_sum(const double* x, int m, int n) {
  if (m == 4 && n == 2) {
    // Sum of the two largest = total minus the two smallest.
    const double lo1 = std::min(x[0], x[1]), hi1 = std::max(x[0], x[1]);
    const double lo2 = std::min(x[2], x[3]), hi2 = std::max(x[2], x[3]);
    return std::max(hi1, hi2) + std::max(std::min(hi1, hi2), std::max(lo1, lo2));
  }
  double top[256];
  int k = 0;
  for (int j = 0; j < m; ++j) {  // insertion into a descending buffer of the n largest so far
    const double v = x[j];
    int i;
    if (k < n) {
      i = k++;
    } else {
      if (v <= top[n - 1]) continue;
      i = n - 1;
    }
    while (i > 0 && top[i - 1] < v) { top[i] = top[i - 1]; --i; }
    top[i] = v;
  }
  double s = 0;
  for (int i = 0; i < n; ++i) s += top[i];
  return s;
}

std::vector<int32_t> ranked_columns(const Problem& p) {
  std::vector<int32_t> ranked(p.R * p.K);
  parallel_for(p.R, 16, [&](int64_t a, int64_t b) {
    std::vector<std::pair<double, int32_t>> key(p.K);  // (-score, column): ascending = the ranking
    for (int64_t r = a; r < b; ++r) {
      const double* x = p.row(r);
      for (int64_t c = 0; c < p.K; ++c) key[c] = {-x[c], int32_t(c)};
      std::sort(key.begin(), key.end());
      int32_t* idx = ranked.data() + r * p.K;
      for (int64_t c = 0; c < p.K; ++c) idx[c] = key[c].second;
    }
  });
  return ranked;
}

std::vector<int32_t> kept_columns(const Problem& p, const int64_t* rows, int64_t nr) {
  std::vector<double> sum(p.K, 0.0);
  for (int64_t i = 0; i < nr; ++i) {
    const double* r = p.row(rows[i]);
    for (int64_t c = 0; c < p.K; ++c) sum[c] += r[c];
  }
  std::vector<int32_t> idx(p.K);
  std::iota(idx.begin(), idx.end(), 0);
  auto better = [&](int32_t a, int32_t b) { return sum[a] > sum[b] || (sum[a] == sum[b] && a < b); };
  if (p.Kt < p.K) std::nth_element(idx.begin(), idx.begin() + p.Kt, idx.end(), better);
  idx.resize(p.Kt);
  std::sort(idx.begin(), idx.end());
  return idx;
}

double topk_within(const double* row, const int32_t* kept, int64_t kt, int64_t keep, double* buf) {
  for (int64_t j = 0; j < kt; ++j) buf[j] = row[kept[j]];
  if (keep < kt) std::nth_element(buf, buf + keep, buf + kt, std::greater<double>());
  double s = 0;
  for (int64_t j = 0; j < keep; ++j) s += buf[j];
  return s;
}

double tile_retained(const Problem& p, const int64_t* rows, int64_t nr, const int32_t* order) {
  double total = 0;
  std::vector<double> g(p.m);
  for (int64_t i = 0; i < nr; ++i) {
    const double* r = p.row(rows[i]);
    double row_total = 0;
    for (int64_t q = 0; q < p.Kt; q += p.m) {
      for (int j = 0; j < p.m; ++j) g[j] = r[order[q + j]];
      row_total += topn_sum(g.data(), p.m, p.n);
    }
    total += row_total;
  }
  return total;
}

TileIcp::TileIcp(const Problem& p, const int64_t* rows, int64_t nr, const std::vector<int32_t>& order)
    : nr_(nr), kt_(p.Kt), n_(p.n), m_(p.m), groups_(p.Kt / p.m), cols_(order), x_(p.Kt * nr), pos_(p.Kt),
      gval_(p.Kt / p.m), thr_(p.Kt * nr), base_(p.Kt), stale_(p.Kt / p.m, 1) {
  for (int64_t j = 0; j < kt_; ++j) {
    pos_[j] = int32_t(j);
    for (int64_t i = 0; i < nr_; ++i) x_[j * nr_ + i] = p.row(rows[i])[cols_[j]];
  }
  for (int64_t g = 0; g < groups_; ++g) refresh_group(g);
}

double TileIcp::group_value(int64_t g) const {
  double buf[256], s = 0;
  for (int64_t i = 0; i < nr_; ++i) {
    for (int j = 0; j < m_; ++j) buf[j] = col(pos_[g * m_ + j])[i];
    s += topn_sum(buf, m_, n_);
  }
  return s;
}

void TileIcp::refresh_group(int64_t g) {
  gval_[g] = group_value(g);
  stale_[g] = 1;
  if (m_ == 4 && n_ == 2) {  // 2:4: the 2nd largest and the top-2 sum of the other three, no selection
    const double* c[4] = {col(pos_[g * m_]), col(pos_[g * m_ + 1]), col(pos_[g * m_ + 2]), col(pos_[g * m_ + 3])};
    for (int j = 0; j < 4; ++j) {
      const double* a = c[j == 0 ? 1 : 0];
      const double* b = c[j <= 1 ? 2 : 1];
      const double* d = c[j <= 2 ? 3 : 2];
      double* t = thr_.data() + (g * m_ + j) * nr_;
      double base = 0;
      for (int64_t i = 0; i < nr_; ++i) {
        const double hi = std::max(std::max(a[i], b[i]), d[i]);
        const double mid = std::max(std::min(a[i], b[i]), std::min(std::max(a[i], b[i]), d[i]));  // median
        t[i] = mid;
        base += hi + mid;
      }
      base_[g * m_ + j] = base;
    }
    return;
  }
  double others[256];
  for (int j = 0; j < m_; ++j) {
    const int64_t q = g * m_ + j;
    double* t = thr_.data() + q * nr_;
    double b = 0;
    for (int64_t i = 0; i < nr_; ++i) {
      int k = 0;
      for (int jj = 0; jj < m_; ++jj)
        if (jj != j) others[k++] = col(pos_[g * m_ + jj])[i];
      std::nth_element(others, others + (n_ - 1), others + k, std::greater<double>());
      t[i] = others[n_ - 1];
      double s = 0;
      for (int jj = 0; jj < n_; ++jj) s += others[jj];  // top n after nth_element: first n (unordered)
      b += s;
    }
    base_[q] = b;
  }
}

double TileIcp::value() const {
  double s = 0;
  for (double g : gval_) s += g;
  return s;
}

std::vector<int32_t> TileIcp::order() const {
  std::vector<int32_t> out(kt_);
  for (int64_t q = 0; q < kt_; ++q) out[q] = cols_[pos_[q]];
  return out;
}

// gains[g * G + h] = base[q_g] + sum_r max(0, x_r - thr[q_g][r]) for the column at q_h (q =
// sample), each sum taken over r in order (so every build gives the same bits), laid out so the
// innermost loop runs over g and vectorises.
void TileIcp::sample_gains(const std::vector<int64_t>& sample, std::vector<double>& thr_t, std::vector<double>& acc,
                           std::vector<double>& gains) const {
  const int64_t G = int64_t(sample.size());
  thr_t.resize(nr_ * G);
  acc.resize(G);
  for (int64_t g = 0; g < G; ++g) {
    const double* t = thr_.data() + sample[g] * nr_;
    for (int64_t i = 0; i < nr_; ++i) thr_t[i * G + g] = t[i];
  }
  for (int64_t h = 0; h < G; ++h) {
    const double* x = col(pos_[sample[h]]);
    std::fill(acc.begin(), acc.end(), 0.0);
    double* a = acc.data();
    for (int64_t i = 0; i < nr_; ++i) {
      const double xi = x[i];
      const double* t = thr_t.data() + i * G;
      add_excess_over(a, xi, t, G);
    }
    for (int64_t g = 0; g < G; ++g) gains[g * G + h] = base_[sample[g]] + a[g];
  }
}

int TileIcp::assignment_stage(uint64_t seed, int fail_limit, const Deadline& dl) {
  if (groups_ < 2) return 0;
  int fails = 0, accepted = 0;
  std::vector<double> cost(groups_ * groups_), thr_t, acc;
  std::vector<int64_t> sample(groups_);
  for (uint64_t step = 0; fails < fail_limit && !dl.expired(); ++step) {
    SplitMix64 rng = SplitMix64::stream(seed, 0x1c9, step);
    for (int64_t g = 0; g < groups_; ++g) sample[g] = g * m_ + rng.below(m_);
    sample_gains(sample, thr_t, acc, cost);
    for (double& c : cost) c = -c;
    const auto asg = linear_assignment(cost.data(), groups_, groups_, false, true);
    double now = 0, before = value();
    for (int64_t g = 0; g < groups_; ++g) now -= cost[g * groups_ + asg[g]];
    if (now > before + 1e-12 * std::max(1.0, std::fabs(before))) {
      std::vector<int32_t> moved(groups_);
      for (int64_t g = 0; g < groups_; ++g) moved[g] = pos_[sample[asg[g]]];
      for (int64_t g = 0; g < groups_; ++g) pos_[sample[g]] = moved[g];
      for (int64_t g = 0; g < groups_; ++g)
        if (asg[g] != g) refresh_group(g);  // the others hold the same columns: nothing to redo
      ++accepted;
    } else {
      ++fails;
    }
  }
  return accepted;
}

// Rows of the swap table whose group was refreshed since they were filled: table_[q * kt + c] =
// base[q] + sum_r max(0, x_c - thr_q), what q's group keeps with local column c at q (summed over
// r in order; the innermost loop runs over c and vectorises on xt_).
void TileIcp::fill_stale_rows() {
  if (table_.empty()) {
    table_.resize(kt_ * kt_);
    xt_.resize(nr_ * kt_);
    for (int64_t c = 0; c < kt_; ++c)
      for (int64_t i = 0; i < nr_; ++i) xt_[i * kt_ + c] = x_[c * nr_ + i];
  }
  for (int64_t g = 0; g < groups_; ++g) {
    if (!stale_[g]) continue;
    stale_[g] = 0;
    for (int64_t q = g * m_; q < (g + 1) * m_; ++q) {
      double* row = table_.data() + q * kt_;
      const double* t = thr_.data() + q * nr_;
      std::fill(row, row + kt_, 0.0);
      for (int64_t i = 0; i < nr_; ++i) {
        const double ti = t[i];
        const double* x = xt_.data() + i * kt_;
        add_excess_of(row, x, ti, kt_);
      }
      for (int64_t c = 0; c < kt_; ++c) row[c] = base_[q] + row[c];
    }
  }
}

int TileIcp::swap_stage(const Deadline& dl, int max_rounds) {
  if (groups_ < 2 || kt_ > 2048) return 0;
  fill_stale_rows();
  const std::vector<double>& table = table_;
  const double eps = 1e-12 * std::max(1.0, std::fabs(value()));
  int swaps = 0;
  // Best swap of every pair of groups; a pair is evaluated again only when one of its groups
  // changed (its table rows, positions and value are all the pair reads).
  struct PairBest { double gain; int64_t q1, q2; };
  std::vector<PairBest> pair_best(groups_ * groups_);
  std::vector<char> redo(groups_, 1);
  std::vector<std::tuple<double, int64_t, int64_t>> cand;
  std::vector<char> used(groups_);
  for (int round = 0; round < max_rounds && !dl.expired(); ++round) {
    cand.clear();
    for (int64_t g1 = 0; g1 < groups_; ++g1)
      for (int64_t g2 = g1 + 1; g2 < groups_; ++g2) {
        PairBest& pb = pair_best[g1 * groups_ + g2];
        if (redo[g1] || redo[g2]) {
          double best = eps;
          int64_t bq1 = -1, bq2 = -1;
          for (int64_t q1 = g1 * m_; q1 < (g1 + 1) * m_; ++q1)
            for (int64_t q2 = g2 * m_; q2 < (g2 + 1) * m_; ++q2) {
              const double gain = table[q1 * kt_ + pos_[q2]] + table[q2 * kt_ + pos_[q1]] - gval_[g1] - gval_[g2];
              if (gain > best) { best = gain; bq1 = q1; bq2 = q2; }
            }
          pb = {best, bq1, bq2};
        }
        if (pb.q1 >= 0) cand.emplace_back(pb.gain, pb.q1, pb.q2);
      }
    if (cand.empty()) break;
    std::sort(cand.begin(), cand.end(), [](const auto& a, const auto& b) {
      return std::get<0>(a) > std::get<0>(b) ||
             (std::get<0>(a) == std::get<0>(b) && std::make_pair(std::get<1>(a), std::get<2>(a)) <
                                                      std::make_pair(std::get<1>(b), std::get<2>(b)));
    });
    std::fill(used.begin(), used.end(), 0);
    for (const auto& [gain, q1, q2] : cand) {
      const int64_t g1 = q1 / m_, g2 = q2 / m_;
      if (used[g1] || used[g2]) continue;
      used[g1] = used[g2] = 1;
      std::swap(pos_[q1], pos_[q2]);
      ++swaps;
      refresh_group(g1);
      refresh_group(g2);
    }
    redo = used;
    fill_stale_rows();
  }
  return swaps;
}

int TileIcp::alternate(uint64_t seed, int fail_limit, const Deadline& dl, int max_cycles) {
  int moves = 0;
  for (int cycle = 0; cycle < max_cycles && !dl.expired(); ++cycle) {
    const int a = assignment_stage(seed + uint64_t(cycle) * 0x9E3779B97F4A7C15ull, fail_limit, dl);
    const int b = swap_stage(dl);
    moves += a + b;
    if (a + b == 0 || (cycle > 0 && a == 0)) break;
  }
  return moves;
}

int TileIcp::window_stage(const Deadline& dl, int max_rounds) {
  if (groups_ < 2 || m_ > 4) return 0;  // 2m columns: 35 splits for m = 4, 6435 for m = 8
  // Every split of 2m columns into two groups of m with the first column in group A.
  const int w = 2 * m_;
  std::vector<uint32_t> splits;
  for (uint32_t mask = 0; mask < (1u << w); ++mask)
    if ((mask & 1u) && __builtin_popcount(mask) == m_) splits.push_back(mask);
  struct Best { double gain; uint32_t split; };
  const int64_t pairs = groups_ * (groups_ - 1) / 2;
  std::vector<int64_t> pair_g1(pairs), pair_g2(pairs);
  for (int64_t g1 = 0, k = 0; g1 < groups_; ++g1)
    for (int64_t g2 = g1 + 1; g2 < groups_; ++g2, ++k) { pair_g1[k] = g1; pair_g2[k] = g2; }
  std::vector<Best> best(pairs);
  auto eval_pair = [&](int64_t k) {
    const int64_t g1 = pair_g1[k], g2 = pair_g2[k];
    const double* c[16];
    for (int j = 0; j < m_; ++j) { c[j] = col(pos_[g1 * m_ + j]); c[m_ + j] = col(pos_[g2 * m_ + j]); }
    Best b{0.0, 0};
    const double cur = gval_[g1] + gval_[g2];
    for (uint32_t split : splits) {
      double s = 0, a[8], bb[8];
      for (int64_t i = 0; i < nr_; ++i) {
        int na = 0, nb = 0;
        for (int j = 0; j < w; ++j) ((split >> j) & 1u ? a[na++] : bb[nb++]) = c[j][i];
        s += topn_sum(a, m_, n_) + topn_sum(bb, m_, n_);
      }
      if (s - cur > b.gain) b = {s - cur, split};
    }
    best[k] = b;
  };
  parallel_for(pairs, 8, [&](int64_t a, int64_t b) { for (int64_t k = a; k < b; ++k) eval_pair(k); });
  const double eps = 1e-12 * std::max(1.0, std::fabs(value()));
  int moves = 0;
  std::vector<char> used(groups_);
  for (int round = 0; round < max_rounds && !dl.expired(); ++round) {
    std::vector<int64_t> order;
    for (int64_t k = 0; k < pairs; ++k) if (best[k].gain > eps) order.push_back(k);
    if (order.empty()) break;
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return best[a].gain > best[b].gain; });
    std::fill(used.begin(), used.end(), 0);
    for (int64_t k : order) {
      const int64_t g1 = pair_g1[k], g2 = pair_g2[k];
      if (used[g1] || used[g2]) continue;
      used[g1] = used[g2] = 1;
      int32_t c[16], na = 0, nb = 0, a[8], bb[8];
      for (int j = 0; j < m_; ++j) { c[j] = pos_[g1 * m_ + j]; c[m_ + j] = pos_[g2 * m_ + j]; }
      for (int j = 0; j < w; ++j) ((best[k].split >> j) & 1u ? a[na++] : bb[nb++]) = c[j];
      for (int j = 0; j < m_; ++j) { pos_[g1 * m_ + j] = a[j]; pos_[g2 * m_ + j] = bb[j]; }
      refresh_group(g1);
      refresh_group(g2);
      ++moves;
    }
    std::vector<int64_t> redo;
    for (int64_t k = 0; k < pairs; ++k) if (used[pair_g1[k]] || used[pair_g2[k]]) redo.push_back(k);
    parallel_for(int64_t(redo.size()), 8, [&](int64_t a, int64_t b) { for (int64_t i = a; i < b; ++i) eval_pair(redo[i]); });
  }
  return moves;
}

}  // namespace hinm::permute
