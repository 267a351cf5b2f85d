// TASD: a tensor approximated by a short series of structured N:M terms (arXiv 2403.07953).
//
// Greedy extraction along the K (column) axis: term 0 keeps, in every group of m0 consecutive
// elements of a row, the n0 with the largest score; it is subtracted, and term 1 does the same
// with (n1, m1) on the residual, and so on. The residual of an element is its value until a term
// takes it and exactly zero afterwards, so "subtract" is a mask update and the terms are disjoint:
// their sum is the input restricted to the taken elements, bit-exact in every dtype, and terms
// with the same m collapse exactly (1:8 + 1:8 == 2:8, 2:4 + 1:4 == 3:4).
#pragma once

#include <vector>

#include "hinm/matrix.hpp"
#include "hinm/pattern.hpp"

namespace hinm {

// One term of a series: its pattern and its N:M container (see nm_format.hpp), written by
// tasd_decompose. values: the tensor's dtype [R, K*n/m]; positions: u8 [R, K*n/m].
struct TASDTerm {
  NMPattern pattern;
  Matrix values;
  Matrix positions;
};

// Throws std::invalid_argument unless the series is non-empty, every pattern is valid and K is a
// multiple of every m in it.
void check_tasd_series(const std::vector<NMPattern>& series, int64_t k, const char* what = "tensor.shape[1]");

// Greedy TASD of tensor [R, K] (f32/f16/bf16/i8). scores: f32/f64 [R, K], or null data for |value|.
// Elements with |value| < threshold are treated as zero before extraction (TASD-A's pseudo-density
// for GELU-like activations): their score becomes 0 and a term that takes one stores 0.
// Taken elements are never preferred again; if a group has fewer untaken elements than a term's n,
// the term also takes already-taken positions, which hold 0 in the residual (and so in the term).
void tasd_decompose(const Matrix& tensor, const Matrix& scores, const std::vector<TASDTerm>& terms,
                    double threshold = 0.0);


}  // namespace hinm
