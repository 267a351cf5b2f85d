// Assignment solvers used by the permutation search.
#pragma once

#include <cstdint>
#include <vector>

namespace hinm {

// Minimum-cost assignment on a dense row-major cost matrix [rows, cols] (float64), rectangular
// allowed: min(rows, cols) pairs, every row (or every column, whichever is fewer) assigned once.
// Shortest augmenting paths (Jonker-Volgenant / Crouse), the same method as
// scipy.optimize.linear_sum_assignment. Returns col_for_row [rows] (-1 for unassigned rows when
// rows > cols). Throws std::invalid_argument on NaN or -inf costs, std::runtime_error if no
// finite-cost assignment exists. reduced_start: start the augmenting paths from the duals of a
// column reduction and (square, finite) Jonker-Volgenant's augmenting row reduction instead of
// zero (an optimal assignment all the same, many times faster on matrices where every row
// prefers the same columns; among equally good assignments it may pick another than scipy).
std::vector<int64_t> linear_assignment(const double* cost, int64_t rows, int64_t cols, bool maximize = false,
                                       bool reduced_start = false);

// Minimum-cost assignment of `rows` items to `bins` bins where bin b takes exactly capacity[b]
// items (sum of capacities == rows); cost is [rows, bins] row-major. Successive shortest paths
// over the bins (one Dijkstra over bins per item, O(rows * bins^2) plus path updates), far faster
// than expanding each bin into capacity[b] columns. Returns bin_for_row [rows].
std::vector<int32_t> capacitated_assignment(const double* cost, int64_t rows, int64_t bins,
                                            const std::vector<int64_t>& capacity);

}  // namespace hinm
