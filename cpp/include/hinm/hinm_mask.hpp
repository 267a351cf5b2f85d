// Scores -> HiNM masks: vector pruning per tile of v rows, then N:M along rows over the kept columns.
#pragma once

#include <cstdint>

#include "hinm/matrix.hpp"
#include "hinm/pattern.hpp"

namespace hinm {

// Throws std::invalid_argument unless row_perm (length R) is a permutation of 0..R-1.
void check_row_perm(const int64_t* row_perm, int64_t rows);
// Throws unless every row of col_order [T, K] is a permutation of 0..K-1.
void check_col_order(const int64_t* col_order, int64_t tiles, int64_t cols);

// The kept columns of every tile, in the tile's order: tile t holds original rows
// row_perm[t*v .. t*v+v) (identity when null); it keeps the kt columns with the largest summed
// score (ties: lower column index), listed in the order they appear in col_order[t] (ascending when
// null). kept: int32 [ceil(R/v), kt]. scores: float32 or float64 [R, K].
void hinm_select_columns(const Matrix& scores, int v, int64_t kt, const int64_t* row_perm,
                         const int64_t* col_order, int32_t* kept);

// The dense keep mask (uint8 [R, K], original coordinates) of the HiNM pattern: the columns above,
// then the n largest scores of every group of m consecutive kept columns along each row (ties: the
// lower position). Also writes the kept columns (int32 [T, kt]).
void hinm_mask(const Matrix& scores, int v, int64_t kt, NMPattern p, const int64_t* row_perm,
               const int64_t* col_order, const Matrix& mask, int32_t* kept);

}  // namespace hinm
