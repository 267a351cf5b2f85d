#include "hinm/nm_format.hpp"

#include <atomic>
#include <cmath>
#include <string>
#include <vector>

#include "hinm/dispatch.hpp"
#include "hinm/mask.hpp"
#include "hinm/parallel.hpp"

namespace hinm {

void abs_scores(const Matrix& weight, const Matrix& scores) {
  require_weight_dtype(weight.dtype, "weight");
  require(scores, "scores", DType::f32, weight.rows, weight.cols);
  parallel_for(weight.rows, 64, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const char* wrow = static_cast<const char*>(weight.data) + r * weight.stride * dtype_size(weight.dtype);
      float* srow = scores.row<float>(r);
      for (int64_t c = 0; c < weight.cols; ++c) srow[c] = std::fabs(load_as_float(wrow, weight.dtype, c));
    }
  });
}

Matrix scores_or_magnitude(const Matrix& weight, const Matrix& scores, std::vector<float>& owned) {
  if (scores.data == nullptr) {
    owned.resize(static_cast<size_t>(weight.rows * weight.cols));
    const Matrix magnitude = make_matrix(owned.data(), DType::f32, weight.rows, weight.cols);
    abs_scores(weight, magnitude);
    check_scores_finite(magnitude, "weight");  // a NaN weight would be kept or dropped arbitrarily
    return magnitude;
  }
  if (scores.rows != weight.rows || scores.cols != weight.cols)
    throw std::invalid_argument("scores must have the shape of the weight");
  check_scores_finite(scores);
  return scores;
}

void compress_nm(const Matrix& weight, const Matrix& scores_in, NMPattern p, const Matrix& values,
                 const Matrix& positions) {
  p.validate();
  require_weight_dtype(weight.dtype, "weight");
  p.check_k(weight.cols, "weight.shape[1]");
  const int64_t kc = p.compressed_cols(weight.cols);
  require(values, "values", weight.dtype, weight.rows, kc);
  require(positions, "positions", DType::u8, weight.rows, kc);

  std::vector<float> owned;
  const Matrix scores = scores_or_magnitude(weight, scores_in, owned);

  dispatch_by_width(weight.dtype, [&](auto tag) {
    using T = decltype(tag);
    auto w = view_as<const T>(weight);
    auto v = view_as<T>(values);
    auto pos = view_as<uint8_t>(positions);
    parallel_for(w.rows, 64, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        for (int64_t g = 0; g < w.cols / p.m; ++g) {
          uint8_t* gp = pos.row(r) + g * p.n;
          if (scores.dtype == DType::f32)
            topn_positions(scores.row<const float>(r) + g * p.m, p.m, p.n, gp);
          else
            topn_positions(scores.row<const double>(r) + g * p.m, p.m, p.n, gp);
          for (int i = 0; i < p.n; ++i) v(r, g * p.n + i) = w(r, g * p.m + gp[i]);
        }
      }
    });
    return 0;
  });
}

void validate_nm_positions(const Matrix& positions, NMPattern p) {
  p.validate();
  if (positions.dtype != DType::u8) throw std::invalid_argument("positions: expected dtype uint8");
  if (positions.cols % p.n != 0)
    throw std::invalid_argument("positions: " + std::to_string(positions.cols) + " columns is not a multiple of n=" +
                                std::to_string(p.n));
  auto pos = view_as<const uint8_t>(positions);
  // A branch-free, vectorisable pass over all rows first (it runs before products, so it must be
  // cheap); the loop below, which names the first bad group, runs only when it finds one.
  std::vector<uint8_t> follows(size_t(pos.cols), 0);  // 1 where a position must exceed the previous one
  for (int64_t j = 0; j < pos.cols; ++j) follows[size_t(j)] = uint8_t(j % p.n != 0);
  const uint8_t m = uint8_t(p.m);
  std::atomic<bool> any_bad{false};
  parallel_for(pos.rows, 64, [&](int64_t r0, int64_t r1) {
    uint8_t bad = 0;
    for (int64_t r = r0; r < r1; ++r) {
      const uint8_t* row = pos.row(r);
      if (pos.cols > 0) bad |= uint8_t(row[0] >= m);
      for (int64_t j = 1; j < pos.cols; ++j)
        bad |= uint8_t(row[j] >= m) | uint8_t(follows[size_t(j)] & uint8_t(row[j] <= row[j - 1]));
    }
    if (bad) any_bad.store(true, std::memory_order_relaxed);
  });
  if (!any_bad.load()) return;
  for (int64_t r = 0; r < pos.rows; ++r) {
    for (int64_t g = 0; g < pos.cols / p.n; ++g) {
      const uint8_t* gp = pos.row(r) + g * p.n;
      for (int i = 0; i < p.n; ++i) {
        if (gp[i] >= p.m || (i > 0 && gp[i] <= gp[i - 1]))
          throw std::invalid_argument("positions: group " + std::to_string(g) + " of row " + std::to_string(r) +
                                      " is not a strictly increasing list of indices below m=" +
                                      std::to_string(p.m));
      }
    }
  }
}

void decompress_nm(const Matrix& values, const Matrix& positions, NMPattern p, const Matrix& dense) {
  p.validate();
  require_weight_dtype(values.dtype, "values");
  require(positions, "positions", DType::u8, values.rows, values.cols);
  validate_nm_positions(positions, p);
  const int64_t k = values.cols / p.n * p.m;
  require(dense, "dense", values.dtype, values.rows, k);
  dispatch_by_width(values.dtype, [&](auto tag) {
    using T = decltype(tag);
    auto v = view_as<const T>(values);
    auto pos = view_as<const uint8_t>(positions);
    auto d = view_as<T>(dense);
    parallel_for(v.rows, 64, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        for (int64_t c = 0; c < k; ++c) d(r, c) = T{0};
        for (int64_t i = 0; i < v.cols; ++i) d(r, i / p.n * p.m + pos(r, i)) = v(r, i);
      }
    });
    return 0;
  });
}

}  // namespace hinm
