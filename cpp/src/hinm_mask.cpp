#include "hinm/hinm_mask.hpp"

#include <algorithm>
#include <numeric>
#include <string>
#include <vector>

#include "hinm/mask.hpp"
#include "hinm/parallel.hpp"

namespace hinm {

namespace {

void check_permutation(const int64_t* p, int64_t n, const std::string& what) {
  std::vector<uint8_t> seen(static_cast<size_t>(n), 0);
  for (int64_t i = 0; i < n; ++i) {
    if (p[i] < 0 || p[i] >= n || seen[p[i]])
      throw std::invalid_argument(what + " is not a permutation of 0.." + std::to_string(n - 1) + " (entry " +
                                  std::to_string(i) + " = " + std::to_string(p[i]) + ")");
    seen[p[i]] = 1;
  }
}

void check_hinm_args(const Matrix& scores, int v, int64_t kt) {
  if (v < 1) throw std::invalid_argument("v must be positive, got " + std::to_string(v));
  if (kt < 1 || kt > scores.cols)
    throw std::invalid_argument("kept columns per tile (" + std::to_string(kt) + ") must be in [1, K=" +
                                std::to_string(scores.cols) + "]");
  check_scores_finite(scores);
}

template <class S>
void select_tile(const MatrixView<const S>& s, int v, int64_t kt, int64_t t, const int64_t* row_perm,
                 const int64_t* col_order, std::vector<double>& colsum, std::vector<int64_t>& order,
                 std::vector<uint8_t>& keep, int32_t* kept_row) {
  const int64_t k = s.cols;
  std::fill(colsum.begin(), colsum.end(), 0.0);
  for (int64_t slot = t * v; slot < std::min<int64_t>((t + 1) * v, s.rows); ++slot) {
    const S* row = s.row(row_perm ? row_perm[slot] : slot);
    for (int64_t c = 0; c < k; ++c) colsum[c] += static_cast<double>(row[c]);
  }
  std::iota(order.begin(), order.end(), 0);
  std::nth_element(order.begin(), order.begin() + (kt - 1), order.end(), [&](int64_t a, int64_t b) {
    return colsum[a] > colsum[b] || (colsum[a] == colsum[b] && a < b);
  });
  std::fill(keep.begin(), keep.end(), 0);
  for (int64_t i = 0; i < kt; ++i) keep[order[i]] = 1;
  int64_t w = 0;
  for (int64_t i = 0; i < k; ++i) {
    const int64_t c = col_order ? col_order[t * k + i] : i;
    if (keep[c]) kept_row[w++] = static_cast<int32_t>(c);
  }
}

template <class S>
void select_columns_typed(const Matrix& scores, int v, int64_t kt, const int64_t* row_perm,
                          const int64_t* col_order, int32_t* kept) {
  auto s = view_as<const S>(scores);
  const int64_t tiles = (s.rows + v - 1) / v;
  parallel_for(tiles, 1, [&](int64_t t0, int64_t t1) {
    std::vector<double> colsum(s.cols);
    std::vector<int64_t> order(s.cols);
    std::vector<uint8_t> keep(s.cols);
    for (int64_t t = t0; t < t1; ++t)
      select_tile(s, v, kt, t, row_perm, col_order, colsum, order, keep, kept + t * kt);
  });
}

template <class S>
void nm_over_kept_typed(const Matrix& scores, int v, int64_t kt, NMPattern p, const int64_t* row_perm,
                        const int32_t* kept, const Matrix& mask) {
  auto s = view_as<const S>(scores);
  auto out = view_as<uint8_t>(mask);
  parallel_for(s.rows, 16, [&](int64_t r0, int64_t r1) {
    std::vector<S> group(p.m);
    std::vector<uint8_t> pos(p.n);
    for (int64_t slot = r0; slot < r1; ++slot) {
      const int64_t r = row_perm ? row_perm[slot] : slot;
      const int32_t* cols = kept + (slot / v) * kt;
      uint8_t* mrow = out.row(r);
      std::fill(mrow, mrow + s.cols, uint8_t{0});
      for (int64_t g = 0; g < kt / p.m; ++g) {
        for (int j = 0; j < p.m; ++j) group[j] = s(r, cols[g * p.m + j]);
        topn_positions(group.data(), p.m, p.n, pos.data());
        for (int i = 0; i < p.n; ++i) mrow[cols[g * p.m + pos[i]]] = 1;
      }
    }
  });
}

}  // namespace

void check_row_perm(const int64_t* row_perm, int64_t rows) { check_permutation(row_perm, rows, "row_perm"); }

void check_col_order(const int64_t* col_order, int64_t tiles, int64_t cols) {
  for (int64_t t = 0; t < tiles; ++t)
    check_permutation(col_order + t * cols, cols, "col_order[" + std::to_string(t) + "]");
}

void hinm_select_columns(const Matrix& scores, int v, int64_t kt, const int64_t* row_perm,
                         const int64_t* col_order, int32_t* kept) {
  check_hinm_args(scores, v, kt);
  if (row_perm) check_row_perm(row_perm, scores.rows);
  if (col_order) check_col_order(col_order, (scores.rows + v - 1) / v, scores.cols);
  if (scores.dtype == DType::f32) return select_columns_typed<float>(scores, v, kt, row_perm, col_order, kept);
  return select_columns_typed<double>(scores, v, kt, row_perm, col_order, kept);
}

void hinm_mask(const Matrix& scores, int v, int64_t kt, NMPattern p, const int64_t* row_perm,
               const int64_t* col_order, const Matrix& mask, int32_t* kept) {
  p.validate();
  p.check_k(kt, "kept columns per tile");
  require(mask, "mask", DType::u8, scores.rows, scores.cols);
  hinm_select_columns(scores, v, kt, row_perm, col_order, kept);
  if (scores.dtype == DType::f32) return nm_over_kept_typed<float>(scores, v, kt, p, row_perm, kept, mask);
  return nm_over_kept_typed<double>(scores, v, kt, p, row_perm, kept, mask);
}

}  // namespace hinm
