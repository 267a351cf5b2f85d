// The N:M compressed container: values [R, K*n/m] (the kept elements of each group of m, in
// ascending position) and positions [R, K*n/m] (uint8, the in-group index of each value).
#pragma once

#include <vector>

#include "hinm/matrix.hpp"
#include "hinm/pattern.hpp"

namespace hinm {

// Keeps, in each group of m, the n elements with the largest score (|weight| when scores.data is
// null). weight: f32/f16/bf16/i8 [R, K]; values: same dtype [R, K*n/m]; positions: u8 [R, K*n/m].
void compress_nm(const Matrix& weight, const Matrix& scores, NMPattern p, const Matrix& values,
                 const Matrix& positions);

// Scatters values back into dense [R, K] (zeros elsewhere). Throws if a position is >= m or the
// positions of a group are not strictly increasing (a corrupted container).
void decompress_nm(const Matrix& values, const Matrix& positions, NMPattern p, const Matrix& dense);

// Throws std::invalid_argument naming the first bad group if positions are not valid for p.
void validate_nm_positions(const Matrix& positions, NMPattern p);

// |w| of every element as float32 (the default saliency).
void abs_scores(const Matrix& weight, const Matrix& scores);

// The scores a compressor ranks by: `scores` itself (checked: the weight's shape, finite) or, when
// it is empty (data == nullptr), |weight| written into `owned`, which must outlive the result.
Matrix scores_or_magnitude(const Matrix& weight, const Matrix& scores, std::vector<float>& owned);

}  // namespace hinm
