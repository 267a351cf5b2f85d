// Permutation search for HiNM and plain N:M masks (gyro-permutation and baselines).
//
// The objective is the HiNM retained saliency of the mask defined in hinm_mask.hpp: tile t holds
// the original rows row_perm[t*v:(t+1)*v]; it keeps the Kt columns with the largest score sum
// (float64, summed in slot order; ties: lower column index), lists them in the order they appear
// in col_order[t], and keeps the n largest scores of every m consecutive kept columns per row.
// Plain N:M is one tile of all rows keeping every column.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "hinm/matrix.hpp"
#include "hinm/pattern.hpp"

namespace hinm {

enum class PermuteMethod { identity, random, channel_swap, gyro };

// Parses "identity" | "random" | "channel_swap" | "gyro"; throws std::invalid_argument otherwise.
PermuteMethod parse_permute_method(const std::string& name);

struct PermuteOptions {
  PermuteMethod method = PermuteMethod::gyro;
  uint64_t seed = 0;
  double time_budget = -1;                     // seconds; < 0 = none (checked between iterations)
  std::vector<int> schedule{8, 1, 4, 1, 2, 1, 1};  // OCP samples per tile, coarse to fine
  // OCP accepts a step when the saliency kept by vector pruning grows (the official objective,
  // best in practice); false: when the HiNM retained saliency (ascending column order) grows.
  bool ocp_vector_objective = true;
  int ocp_fail_limit = 1;   // OCP: consecutive non-improving steps ending one schedule entry
  // gyro: max Lloyd rounds of rows -> tiles on the top-k objective (0: off); a round gaining less
  // than cluster_min_gain of the objective ends the stage.
  int cluster_rounds = 50;
  double cluster_min_gain = 1e-5;
  // gyro: simulated annealing of rows between tiles on the top-k objective after the clustering
  // (exact kept sets): anneal_moves proposed row swaps per row of the matrix (0: off; scaled by
  // 384 / K when K > 384, a proposal costing O(K)), starting at anneal_temperature times the mean
  // top-k value of a row and cooling linearly to 0. Only for at most anneal_max_tiles tiles: on
  // MiniLM's 1536x384 layers (24 tiles at v=64) it never beat the clustering.
  int64_t anneal_moves = 1000;
  double anneal_temperature = 0.018;
  int anneal_max_tiles = 12;
  // ICP: non-improving assignment steps ending a tile's search, for tiles of up to 48 groups of m
  // kept columns; wider tiles get icp_fail_limit * (48 / groups)^2 (at least min(3, icp_fail_limit)):
  // a step costs O(groups^2) and more, and more steps paid off on narrow tiles only.
  int icp_fail_limit = 30;
  int refine_rounds = 30;   // gyro: max rounds of (rows -> tiles assignment, column swaps)
  int swap_rounds = 20;     // gyro: max rounds of (row swaps between tiles, ICP of changed tiles)
  bool window_search = true;  // channel_swap / gyro ICP: exhaustive re-partition of pairs of groups
  // Called on the calling thread after every stage step: (stage, step, retained saliency).
  std::function<void(const std::string&, int64_t, double)> progress;
};

struct PermuteHistoryEntry {
  std::string stage;
  double retained = 0;
  double seconds = 0;
};

struct PermuteResult {
  std::vector<int64_t> row_perm;    // [R]
  std::vector<int64_t> col_orders;  // [T, K] row-major, each row a permutation of range(K)
  double retained = 0;              // HiNM retained saliency (sum of kept scores)
  // retained of the best state so far after each step (non-decreasing); the result is that state.
  std::vector<PermuteHistoryEntry> history;
};

// scores: float32/float64 [R, K], finite and >= 0 not required (NaN rejected). v rows per tile
// (v >= R: one tile), kept = Kt (multiple of m, m <= Kt <= K).
PermuteResult search_permutation(const Matrix& scores, int64_t v, int64_t kept, NMPattern pattern,
                                 const PermuteOptions& options);

// HiNM retained saliency of (row_perm, col_orders) by the definition above (col_orders may be
// empty = ascending in every tile). Used by the search and by tests.
double hinm_retained(const Matrix& scores, int64_t v, int64_t kept, NMPattern pattern,
                     const std::vector<int64_t>& row_perm, const std::vector<int64_t>& col_orders);

}  // namespace hinm
