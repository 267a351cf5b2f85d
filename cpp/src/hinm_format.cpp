#include "hinm/hinm_format.hpp"

#include <cstring>
#include <string>
#include <vector>

#include "hinm/dispatch.hpp"
#include "hinm/hinm_mask.hpp"
#include "hinm/mask.hpp"
#include "hinm/nm_format.hpp"
#include "hinm/parallel.hpp"

namespace hinm {

namespace {

void check_view_shapes(const HiNMView& w) {
  w.pattern.validate();
  if (w.v < 1) throw std::invalid_argument("HiNM: v must be positive");
  if (w.rows < 0 || w.cols < 1) throw std::invalid_argument("HiNM: bad shape");
  if (w.kept < w.pattern.m || w.kept > w.cols || w.kept % w.pattern.m)
    throw std::invalid_argument("HiNM: kept columns per tile (" + std::to_string(w.kept) +
                                ") must be a multiple of m in [m, K=" + std::to_string(w.cols) + "]");
  if (!w.col_idx && w.kept != w.cols) throw std::invalid_argument("HiNM: col_idx is required when Kt < K");
  require_weight_dtype(w.values.dtype, "HiNM values");
  require(w.values, "HiNM values", w.values.dtype, w.slots(), w.compressed_cols());
  require(w.positions, "HiNM positions", DType::u8, w.slots(), w.compressed_cols());
}

template <class S>
void compress_rows(const Matrix& weight, const MatrixView<const S>& s, const HiNMView& out, const int32_t* kept) {
  const NMPattern p = out.pattern;
  const int64_t kt = out.kept;
  dispatch_by_width(weight.dtype, [&](auto tag) {
    using T = decltype(tag);
    auto w = view_as<const T>(weight);
    auto vals = view_as<T>(out.values);
    auto pos = view_as<uint8_t>(out.positions);
    parallel_for(out.slots(), 16, [&](int64_t s0, int64_t s1) {
      std::vector<S> group(p.m);
      for (int64_t slot = s0; slot < s1; ++slot) {
        if (slot >= out.rows) {  // padding slot: zero values, the first n positions of every group
          for (int64_t j = 0; j < vals.cols; ++j) { vals(slot, j) = T{0}; pos(slot, j) = uint8_t(j % p.n); }
          continue;
        }
        const int64_t r = out.row_perm ? out.row_perm[slot] : slot;
        const int32_t* cols = kept + (slot / out.v) * kt;
        for (int64_t g = 0; g < kt / p.m; ++g) {
          uint8_t* gp = pos.row(slot) + g * p.n;
          for (int j = 0; j < p.m; ++j) group[j] = s(r, cols[g * p.m + j]);
          topn_positions(group.data(), p.m, p.n, gp);
          for (int i = 0; i < p.n; ++i) vals(slot, g * p.n + i) = w(r, cols[g * p.m + gp[i]]);
        }
      }
    });
    return 0;
  });
}

}  // namespace

void hinm_compress(const Matrix& weight, const Matrix& scores_in, const HiNMView& out, int32_t* col_idx_out,
                   const int64_t* col_order) {
  require_weight_dtype(weight.dtype, "weight");
  if (weight.rows != out.rows || weight.cols != out.cols)
    throw std::invalid_argument("HiNM compress: weight shape does not match the container");
  if (out.values.dtype != weight.dtype) throw std::invalid_argument("HiNM compress: values dtype differs from weight");
  if (col_idx_out == nullptr) throw std::invalid_argument("HiNM compress: col_idx output is required");
  HiNMView shape = out;
  shape.col_idx = col_idx_out;
  check_view_shapes(shape);

  std::vector<float> owned;
  const Matrix scores = scores_or_magnitude(weight, scores_in, owned);
  hinm_select_columns(scores, out.v, out.kept, out.row_perm, col_order, col_idx_out);
  if (scores.dtype == DType::f32)
    compress_rows(weight, view_as<const float>(scores), out, col_idx_out);
  else
    compress_rows(weight, view_as<const double>(scores), out, col_idx_out);
}

void hinm_validate(const HiNMView& w) {
  check_view_shapes(w);
  if (w.row_perm) check_row_perm(w.row_perm, w.rows);
  if (w.col_idx) {
    std::vector<int64_t> seen(static_cast<size_t>(w.cols), -1);
    for (int64_t t = 0; t < w.tiles(); ++t)
      for (int64_t j = 0; j < w.kept; ++j) {
        const int64_t c = w.col_idx[t * w.kept + j];
        if (c < 0 || c >= w.cols)
          throw std::invalid_argument("HiNM col_idx[" + std::to_string(t) + "][" + std::to_string(j) + "] = " +
                                      std::to_string(c) + " is out of range [0, " + std::to_string(w.cols) + ")");
        if (seen[c] == t)
          throw std::invalid_argument("HiNM col_idx[" + std::to_string(t) + "] lists column " + std::to_string(c) +
                                      " twice");
        seen[c] = t;
      }
  }
  validate_nm_positions(w.positions, w.pattern);
  const int es = dtype_size(w.values.dtype);
  for (int64_t slot = w.rows; slot < w.slots(); ++slot) {
    const char* row = static_cast<const char*>(w.values.data) + slot * w.values.stride * es;
    for (int64_t b = 0; b < w.compressed_cols() * es; ++b)
      if (row[b] != 0)
        throw std::invalid_argument("HiNM values: padding slot " + std::to_string(slot) + " is not zero");
  }
}

void hinm_decompress(const HiNMView& w, const Matrix& dense) {
  hinm_validate(w);
  require(dense, "dense", w.values.dtype, w.rows, w.cols);
  const NMPattern p = w.pattern;
  dispatch_by_width(w.values.dtype, [&](auto tag) {
    using T = decltype(tag);
    auto vals = view_as<const T>(w.values);
    auto pos = view_as<const uint8_t>(w.positions);
    auto d = view_as<T>(dense);
    parallel_for(w.rows, 16, [&](int64_t s0, int64_t s1) {
      for (int64_t slot = s0; slot < s1; ++slot) {
        const int64_t r = w.row_perm ? w.row_perm[slot] : slot;
        const int32_t* cols = w.col_idx ? w.col_idx + (slot / w.v) * w.kept : nullptr;
        T* drow = d.row(r);
        std::fill(drow, drow + w.cols, T{0});
        for (int64_t j = 0; j < vals.cols; ++j) {
          const int64_t local = j / p.n * p.m + pos(slot, j);
          drow[cols ? cols[local] : local] = vals(slot, j);
        }
      }
    });
    return 0;
  });
}

}  // namespace hinm
