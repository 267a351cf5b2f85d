// Scores -> keep masks.
#pragma once

#include <cstdint>

#include "hinm/matrix.hpp"
#include "hinm/pattern.hpp"

namespace hinm {

// Throws std::invalid_argument if any score is NaN (a mask built from NaN scores is meaningless).
void check_scores_finite(const Matrix& scores, const char* what = "scores");

// mask (uint8, same shape as scores, 1 = keep): the n largest scores of every m consecutive
// elements of each row. Ties: the lower index wins. scores: float32 or float64, cols % m == 0.
void nm_mask(const Matrix& scores, NMPattern p, const Matrix& mask);

// Positions (0..m-1, ascending) of the n kept elements of one group of m scores, written to pos[0..n).
// The single definition of "top n, ties to the lower index" that every mask in the library uses.
template <class S>
inline void topn_positions(const S* s, int m, int n, uint8_t* pos) {
  int w = 0;
  for (int j = 0; j < m; ++j) {
    int rank = 0;
    const S sj = s[j];
    for (int k = 0; k < m; ++k) rank += (s[k] > sj) || (s[k] == sj && k < j);
    if (rank < n) pos[w++] = static_cast<uint8_t>(j);
  }
}

}  // namespace hinm
