// Balanced k-means: k clusters of exactly `size` points each.
#pragma once

#include <cstdint>
#include <vector>

namespace hinm {

// points: [k*size, dim] row-major float64. Lloyd iterations whose assignment step is a
// capacitated assignment (every cluster takes exactly `size` points) on squared distances;
// initial centroids are k distinct points drawn with `seed`. Stops after max_iter iterations or
// when no centroid moves by more than tol (relative to the data scale). Returns the cluster of
// every point; deterministic for a seed and independent of the thread count.
std::vector<int32_t> balanced_kmeans(const double* points, int64_t k, int64_t size, int64_t dim, uint64_t seed,
                                     int max_iter = 20, double tol = 1e-4);

}  // namespace hinm
