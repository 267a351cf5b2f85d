#include "hinm/permute_kmeans.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "hinm/parallel.hpp"
#include "hinm/permute_lap.hpp"
#include "hinm/permute_rng.hpp"
#include "permute_tile.hpp"

namespace hinm {

namespace {

// d[j] += (x - c[j])^2 for j < k.
HINM_SIMD_CLONES void add_squared_gaps(double* __restrict d, double x, const double* __restrict c, int64_t k) {
  for (int64_t j = 0; j < k; ++j) d[j] += (x - c[j]) * (x - c[j]);
}

}  // namespace

std::vector<int32_t> balanced_kmeans(const double* points, int64_t k, int64_t size, int64_t dim, uint64_t seed,
                                     int max_iter, double tol) {
  if (k < 1 || size < 1 || dim < 1)
    throw std::invalid_argument("balanced_kmeans: need k >= 1, size >= 1, dim >= 1 (got k=" + std::to_string(k) +
                                ", size=" + std::to_string(size) + ", dim=" + std::to_string(dim) + ")");
  const int64_t n = k * size;
  for (int64_t i = 0; i < n * dim; ++i)
    if (!std::isfinite(points[i])) throw std::invalid_argument("balanced_kmeans: points contain NaN or inf");
  // Initial centroids: k distinct points (partial Fisher-Yates).
  std::vector<int64_t> idx(n);
  for (int64_t i = 0; i < n; ++i) idx[i] = i;
  SplitMix64 rng = SplitMix64::stream(seed, 0x6b6d);
  for (int64_t i = 0; i < k; ++i) std::swap(idx[i], idx[i + rng.below(n - i)]);
  std::vector<double> cent(k * dim), cost(n * k), next(k * dim);
  for (int64_t j = 0; j < k; ++j) std::copy(points + idx[j] * dim, points + (idx[j] + 1) * dim, cent.begin() + j * dim);
  double scale = 0;
  for (int64_t i = 0; i < n * dim; ++i) scale = std::max(scale, std::fabs(points[i]));
  const std::vector<int64_t> cap(k, size);
  std::vector<int32_t> label(n, 0);
  std::vector<double> cent_t(dim * k);  // centroids [dim][k]: the loop over clusters vectorises
  for (int it = 0; it < max_iter; ++it) {
    for (int64_t j = 0; j < k; ++j)
      for (int64_t e = 0; e < dim; ++e) cent_t[e * k + j] = cent[j * dim + e];
    parallel_for(n, 16, [&](int64_t p0, int64_t p1) {
      for (int64_t p = p0; p < p1; ++p) {
        // Every distance summed over e in order, as a loop per cluster would.
        double* d = cost.data() + p * k;
        std::fill(d, d + k, 0.0);
        const double* x = points + p * dim;
        for (int64_t e = 0; e < dim; ++e) add_squared_gaps(d, x[e], cent_t.data() + e * k, k);
      }
    });
    label = capacitated_assignment(cost.data(), n, k, cap);
    std::fill(next.begin(), next.end(), 0.0);
    for (int64_t p = 0; p < n; ++p)
      for (int64_t e = 0; e < dim; ++e) next[label[p] * dim + e] += points[p * dim + e];
    double shift = 0;
    for (int64_t i = 0; i < k * dim; ++i) {
      next[i] /= double(size);
      shift = std::max(shift, std::fabs(next[i] - cent[i]));
    }
    cent.swap(next);
    if (shift <= tol * std::max(scale, 1e-300)) break;
  }
  return label;
}

}  // namespace hinm
