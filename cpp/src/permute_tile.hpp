// Internal building blocks of the permutation search: the problem, one tile's mask value, and the
// per-tile input-channel permutation (ICP) over the tile's kept columns.
#pragma once

#include <chrono>
#include <cstdint>
#include <vector>

#include "hinm/permute_rng.hpp"

// Hot loops of the search, also compiled for AVX2 where the toolchain can pick a version at load
// time (no FMA: the same roundings as the baseline build, so results do not change). Needs GCC
// and glibc's ifunc; elsewhere the baseline build only.
#if defined(__x86_64__) && defined(__linux__) && defined(__GLIBC__) && defined(__GNUC__) && !defined(__clang__)
#define HINM_SIMD_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define HINM_SIMD_CLONES
#endif

namespace hinm::permute {

struct Problem {
  const double* s = nullptr;  // scores [R, K] row-major
  int64_t R = 0, K = 0, v = 0, Kt = 0;
  int n = 2, m = 4;

  int64_t tiles() const { return (R + v - 1) / v; }
  int64_t tile_rows(int64_t t) const { return std::min(v, R - t * v); }
  const double* row(int64_t r) const { return s + r * K; }
};

struct Deadline {
  bool active = false;
  std::chrono::steady_clock::time_point at;
  bool expired() const { return active && std::chrono::steady_clock::now() >= at; }
};

// sum[c] = a[c] + b[c] for c < K; returns the sum of those below `lo` (added in four lanes, c
// mod 4, then (0 + 1) + (2 + 3): the same with or without SIMD) and counts them in n_below; the
// values in [lo, hi] go to band[0..n_band) in column order.
double split_sum(const double* a, const double* b, double* sum, int64_t K, double lo, double hi, double* band,
                 int64_t& n_band, int64_t& n_below);

// Sum of the n largest of m values (independent of how ties are broken).
double topn_sum(const double* x, int m, int n);

// Column sums of the rows (float64, in the given order) and the canonical kept set: the Kt columns
// with the largest sum, ties to the lower column index; returned in ascending column order.
std::vector<int32_t> kept_columns(const Problem& p, const int64_t* rows, int64_t nr);

// Every row's columns by descending score (ties: lower column), [R, K] row-major: a row's top-k
// within a kept set is then the first k of its list that the set holds.
std::vector<int32_t> ranked_columns(const Problem& p);

// Retained saliency of one tile: rows `rows`, kept columns listed in `order` (Kt entries).
double tile_retained(const Problem& p, const int64_t* rows, int64_t nr, const int32_t* order);

// Sum of the `keep` largest of row[kept[0..kt)] (buf: kt scratch values). With keep = Kt*n/m this
// is what the best column order of a tile could keep of the row: the row-clustering objective.
double topk_within(const double* row, const int32_t* kept, int64_t kt, int64_t keep, double* buf);

// One tile's kept block (nr rows x Kt columns, stored column-major) and its column order, with the
// data needed to score column moves between groups. Position q holds local column pos[q]; group g
// is positions [g*m, (g+1)*m). For position q, thr[q] / base[q] are, per row, the n-th largest and
// the top-n sum of the other m-1 columns of q's group; putting column x at q then gives the group
// base[q] + sum_r max(0, x_r - thr[q][r]).
class TileIcp {
 public:
  TileIcp(const Problem& p, const int64_t* rows, int64_t nr, const std::vector<int32_t>& order);

  double value() const;                 // retained of the tile in the current order
  std::vector<int32_t> order() const;   // kept columns (original indices) in the current order
  // Official InPerm step loop: one sampled column per group, P x P assignment; stop after
  // fail_limit non-improving steps. Returns the number of accepted steps.
  int assignment_stage(uint64_t seed, int fail_limit, const Deadline& dl);
  // Greedy best pairwise swaps between groups (non-overlapping per round) until none gains.
  int swap_stage(const Deadline& dl, int max_rounds = 100000);
  // Exhaustive re-partition of pairs of groups (2m columns into two groups, every split; m <= 4).
  // Alternates assignment steps and swap rounds until neither improves.
  int alternate(uint64_t seed, int fail_limit, const Deadline& dl, int max_cycles = 4);
  int window_stage(const Deadline& dl, int max_rounds = 1000);

 private:
  int64_t nr_, kt_;
  int n_, m_;
  int64_t groups_;
  std::vector<int32_t> cols_;  // local column -> original column
  std::vector<double> x_;      // [kt][nr]
  std::vector<int32_t> pos_;   // position -> local column
  std::vector<double> gval_;   // [groups]
  std::vector<double> thr_;    // [kt][nr]
  std::vector<double> base_;   // [kt]
  std::vector<char> stale_;    // [groups]: refreshed since its swap-table rows were filled
  std::vector<double> table_;  // [kt][kt] swap table (see fill_stale_rows), allocated on first use
  std::vector<double> xt_;     // [nr][kt] the kept block row-major, for the swap table

  const double* col(int32_t local) const { return x_.data() + int64_t(local) * nr_; }
  double group_value(int64_t g) const;
  void refresh_group(int64_t g);  // gval_, thr_, base_ of group g's positions; marks it stale
  void fill_stale_rows();
  // gains[g*G + h] = base[q_g] + sum_r max(0, x_r - thr[q_g][r]) for the column at q_h, q = sample.
  void sample_gains(const std::vector<int64_t>& sample, std::vector<double>& thr_t, std::vector<double>& acc,
                    std::vector<double>& gains) const;
};

}  // namespace hinm::permute
