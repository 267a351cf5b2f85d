#include "hinm/mask.hpp"

#include <cmath>
#include <string>
#include <vector>

#include "hinm/parallel.hpp"

namespace hinm {

namespace {

template <class S>
void check_finite_typed(const Matrix& scores, const char* what) {
  auto v = view_as<const S>(scores);
  for (int64_t r = 0; r < v.rows; ++r)
    for (int64_t c = 0; c < v.cols; ++c)
      if (std::isnan(v(r, c)))
        throw std::invalid_argument(std::string(what) + " contains NaN (first at row " + std::to_string(r) +
                                    ", column " + std::to_string(c) + ")");
}

template <class S>
void nm_mask_typed(const Matrix& scores, NMPattern p, const Matrix& mask) {
  auto s = view_as<const S>(scores);
  auto out = view_as<uint8_t>(mask);
  const int64_t groups = s.cols / p.m;
  parallel_for(s.rows, 64, [&](int64_t r0, int64_t r1) {
    std::vector<uint8_t> pos(p.n);
    for (int64_t r = r0; r < r1; ++r) {
      uint8_t* mrow = out.row(r);
      for (int64_t c = 0; c < s.cols; ++c) mrow[c] = 0;
      for (int64_t g = 0; g < groups; ++g) {
        topn_positions(s.row(r) + g * p.m, p.m, p.n, pos.data());
        for (int i = 0; i < p.n; ++i) mrow[g * p.m + pos[i]] = 1;
      }
    }
  });
}

}  // namespace

void check_scores_finite(const Matrix& scores, const char* what) {
  if (scores.dtype == DType::f32) return check_finite_typed<float>(scores, what);
  if (scores.dtype == DType::f64) return check_finite_typed<double>(scores, what);
  throw std::invalid_argument(std::string(what) + ": expected float32 or float64, got " + dtype_name(scores.dtype));
}

void nm_mask(const Matrix& scores, NMPattern p, const Matrix& mask) {
  p.validate();
  p.check_k(scores.cols, "scores.shape[-1]");
  require(mask, "mask", DType::u8, scores.rows, scores.cols);
  check_scores_finite(scores);
  if (scores.dtype == DType::f32) return nm_mask_typed<float>(scores, p, mask);
  return nm_mask_typed<double>(scores, p, mask);
}

}  // namespace hinm
