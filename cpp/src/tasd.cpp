#include "hinm/tasd.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

#include "hinm/dispatch.hpp"
#include "hinm/mask.hpp"
#include "hinm/parallel.hpp"

namespace hinm {

namespace {

// Scores of one row as the extraction sees them: thresholded elements score 0, NaN is rejected.
template <class S>
void row_scores(const Matrix& tensor, const Matrix& scores, int64_t r, double threshold, S* buf, uint8_t* zeroed) {
  const char* trow = static_cast<const char*>(tensor.data) + r * tensor.stride * dtype_size(tensor.dtype);
  for (int64_t c = 0; c < tensor.cols; ++c) {
    const float x = load_as_float(trow, tensor.dtype, c);
    zeroed[c] = threshold > 0.0 && std::fabs(x) < threshold;
    S s = scores.data == nullptr ? S(std::fabs(x)) : scores.row<const S>(r)[c];
    if (zeroed[c]) s = S(0);
    if (std::isnan(s))
      throw std::invalid_argument(std::string(scores.data == nullptr ? "tensor" : "scores") +
                                  " contains NaN (first at row " + std::to_string(r) + ", column " +
                                  std::to_string(c) + ")");
    buf[c] = s;
  }
}

template <class T, class S>
void decompose_typed(const Matrix& tensor, const Matrix& scores, const std::vector<TASDTerm>& terms,
                     double threshold) {
  auto w = view_as<const T>(tensor);
  const int64_t k = tensor.cols;
  parallel_for(tensor.rows, 32, [&](int64_t r0, int64_t r1) {
    std::vector<S> buf(static_cast<size_t>(k));
    std::vector<uint8_t> zeroed(static_cast<size_t>(k)), taken(static_cast<size_t>(k));
    std::vector<uint8_t> pos(256);
    for (int64_t r = r0; r < r1; ++r) {
      row_scores<S>(tensor, scores, r, threshold, buf.data(), zeroed.data());
      std::fill(taken.begin(), taken.end(), uint8_t{0});
      for (const TASDTerm& term : terms) {
        const int n = term.pattern.n, m = term.pattern.m;
        T* vrow = term.values.row<T>(r);
        uint8_t* prow = term.positions.row<uint8_t>(r);
        for (int64_t g = 0; g < k / m; ++g) {
          topn_positions(buf.data() + g * m, m, n, pos.data());
          for (int i = 0; i < n; ++i) {
            const int64_t c = g * m + pos[i];
            // The residual is exactly zero where an earlier term took the element.
            vrow[g * n + i] = (taken[c] || zeroed[c]) ? T{0} : w(r, c);
            prow[g * n + i] = pos[i];
            taken[c] = 1;
            buf[c] = -std::numeric_limits<S>::infinity();
          }
        }
      }
    }
  });
}

}  // namespace

void check_tasd_series(const std::vector<NMPattern>& series, int64_t k, const char* what) {
  if (series.empty()) throw std::invalid_argument("TASD series: needs at least one N:M term");
  for (const NMPattern& p : series) {
    p.validate();
    p.check_k(k, what);
  }
}

void tasd_decompose(const Matrix& tensor, const Matrix& scores, const std::vector<TASDTerm>& terms,
                    double threshold) {
  require_weight_dtype(tensor.dtype, "tensor");
  std::vector<NMPattern> series;
  for (const TASDTerm& t : terms) series.push_back(t.pattern);
  check_tasd_series(series, tensor.cols);
  if (!(threshold >= 0.0) || std::isinf(threshold))
    throw std::invalid_argument("threshold must be finite and >= 0, got " + std::to_string(threshold));
  for (size_t i = 0; i < terms.size(); ++i) {
    const std::string name = "term " + std::to_string(i);
    const int64_t kc = terms[i].pattern.compressed_cols(tensor.cols);
    require(terms[i].values, (name + " values").c_str(), tensor.dtype, tensor.rows, kc);
    require(terms[i].positions, (name + " positions").c_str(), DType::u8, tensor.rows, kc);
  }
  if (scores.data != nullptr) {
    if (scores.dtype != DType::f32 && scores.dtype != DType::f64)
      throw std::invalid_argument(std::string("scores: expected float32 or float64, got ") + dtype_name(scores.dtype));
    require(scores, "scores", scores.dtype, tensor.rows, tensor.cols);
  }
  dispatch_by_width(tensor.dtype, [&](auto tag) {
    using T = decltype(tag);
    if (scores.data != nullptr && scores.dtype == DType::f64)
      decompose_typed<T, double>(tensor, scores, terms, threshold);
    else
      decompose_typed<T, float>(tensor, scores, terms, threshold);
    return 0;
  });
}

}  // namespace hinm
