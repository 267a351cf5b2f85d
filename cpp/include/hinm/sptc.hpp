// Sparse-tensor-core (mma.sp) compression: dense 2:4 (f16/bf16/int8) or 1:2 (f32 as tf32) matrices
// to compressed values + metadata words, and back. The metadata buffer is the lane-word layout of
// sptc_index.hpp, which is byte-identical to PyTorch's CUTLASS `meta_reordered`.
#pragma once

#include <cstdint>

#include "hinm/matrix.hpp"

namespace hinm {

// Number of u32 metadata words for an M x K dense matrix of `dtype`. Throws std::invalid_argument
// naming the rule when the shape is not supported (M % 32, or % 16 for int8; K % 32 for f16/bf16,
// % 16 for f32, % 64 for int8) or the dtype is not f16/bf16/int8/f32.
int64_t sptc_meta_words(DType dtype, int64_t rows, int64_t cols);

// values: [M, K/2] of the dense dtype; meta: sptc_meta_words(...) words. Chunks with fewer nonzeros
// than the pattern allows get legal ascending codes (zeros stored), chosen as PyTorch 2.13 does;
// chunks with more throw std::invalid_argument naming the row and chunk.
void sptc_compress(const Matrix& dense, const Matrix& values, uint32_t* meta);

// dense [M, K] from values [M, K/2] + meta. Throws std::invalid_argument on an illegal code.
void sptc_decompress(const Matrix& values, const uint32_t* meta, const Matrix& dense);

// Metadata for an already compressed matrix given the in-group positions of its values
// (u8 [M, K/2]: 2 ascending positions < 4 per chunk for 2:4, 1 position < 2 per pair for f32's 1:2).
void sptc_metadata_from_positions(const Matrix& positions, DType dtype, int64_t cols, uint32_t* meta);

}  // namespace hinm
