// The HiNM (hierarchical N:M) compressed container, as raw views the kernels read.
//
// W is [R = out, K = in]. Rows are cut into T = ceil(R / v) tiles of v row *slots*; slot s of the
// compressed matrix holds original row row_perm[s] (s < R); slots R..T*v-1 pad the last tile and
// hold zeros. Tile t keeps Kt columns (a multiple of m), listed in col_idx[t] in the tile's order
// (the input-channel permutation); along each slot row, consecutive groups of m kept columns hold n
// values each:
//   value j of slot s = W[row_perm[s], col_idx[t][(j / n) * m + positions[s][j]]],  t = s / v.
// Plain N:M is the special case T = 1, v = R, Kt = K, col_idx = identity (null), row_perm = identity.
#pragma once

#include <cstdint>

#include "hinm/matrix.hpp"
#include "hinm/pattern.hpp"

namespace hinm {

struct HiNMView {
  int64_t rows = 0;             // R (original output rows)
  int64_t cols = 0;             // K (original input columns)
  int v = 0;                    // rows per tile
  int64_t kept = 0;             // Kt, kept columns per tile
  NMPattern pattern{2, 4};
  Matrix values;                // [T*v, Kt*n/m], f32/f16/bf16/i8
  Matrix positions;             // [T*v, Kt*n/m], u8, in-group positions, strictly increasing per group
  const int32_t* col_idx = nullptr;   // [T, Kt] row-major; null = identity (Kt == K)
  const int64_t* row_perm = nullptr;  // [R]; null = identity

  int64_t tiles() const { return (rows + v - 1) / v; }
  int64_t slots() const { return tiles() * v; }
  int64_t compressed_cols() const { return kept / pattern.m * pattern.n; }
};

}  // namespace hinm

namespace hinm {

// Fills the HiNM container `out` (values, positions and col_idx buffers allocated by the caller with
// the shapes above; out.col_idx must be writable) from a dense weight [R, K] (f32/f16/bf16/i8).
// scores: float32/float64 [R, K], or null data for |weight|. row_perm [R] and col_order [T, K] as in
// hinm_mask (nullable = identity / ascending). Padding slots get zero values.
void hinm_compress(const Matrix& weight, const Matrix& scores, const HiNMView& out, int32_t* col_idx_out,
                   const int64_t* col_order);

// Throws std::invalid_argument naming the first broken invariant: shapes and dtypes, col_idx entries
// in range and distinct per tile, row_perm a permutation, positions strictly increasing below m,
// padding slots zero.
void hinm_validate(const HiNMView& w);

// The masked weight in original coordinates, bit-exact: dense [R, K] of the values' dtype.
void hinm_decompress(const HiNMView& w, const Matrix& dense);

}  // namespace hinm
