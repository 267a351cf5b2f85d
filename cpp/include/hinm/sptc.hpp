// Sparse-tensor-core (mma.sp) compression: dense 2:4 (f16/bf16/int8) or 1:2 (f32 as tf32) ->
// compressed values [M, K/2] + metadata, in the byte layout of torch's CUTLASS backend
// (sparse_semi_structured_from_dense_cutlass). Index math: hinm/sptc_index.hpp.
//
// The "cutlass" layout (meta_reordered: int16 [M, K/16] for f16/bf16, int16 [M, K/8] for f32,
// int32 [M, K/32] for int8) and the "lanes" layout (uint32 [n_blocks, 32], word L of a block = the
// `e` operand of lane L) are the SAME bytes; they differ only in the array's dtype and shape.
// So the functions below take the metadata as a raw buffer: any dtype, contiguous, exactly
// 4 * n_words bytes (sptc_metadata_shape gives the canonical shape of each layout).
//
// Codes are always ascending (valid for mma.sp::ordered_metadata and plain mma.sp). Chunks with
// fewer nonzeros than allowed get the code torch 2.13 gives them (zeros stored as values), so
// outputs are byte-identical to torch for every input torch encodes losslessly.
#pragma once

#include <cstdint>

#include "hinm/matrix.hpp"
#include "hinm/sptc_index.hpp"

namespace hinm {

enum class SptcLayout : int { cutlass = 0, lanes = 1 };

// The sptc geometry of a value dtype: f16/bf16/int8 (2:4) or f32 (tf32 1:2). Throws
// std::invalid_argument naming `what` for other dtypes.
sptc::ValueKind sptc_kind(DType dtype, const char* what = "values");

// Throws std::invalid_argument unless an [rows, cols] dense matrix of `dtype` can be encoded:
// rows a multiple of 32 (16 for int8), cols a multiple of 32 (f16/bf16), 64 (int8) or 16 (f32).
void sptc_check_shape(DType dtype, int64_t rows, int64_t cols, const char* what = "dense");

struct SptcMetaShape {
  int64_t rows = 0;
  int64_t cols = 0;
  int elem_bytes = 4;  // 2 (int16) or 4 (int32 / uint32)
};
// Canonical metadata array shape of a dense [rows, cols] matrix of `dtype` in `layout`.
SptcMetaShape sptc_metadata_shape(DType dtype, int64_t rows, int64_t cols, SptcLayout layout);
// Number of 32-bit metadata words (= 32 * n_blocks).
int64_t sptc_metadata_words(DType dtype, int64_t rows, int64_t cols);

// dense [M, K] (f16/bf16/int8 2:4, f32 1:2) -> values [M, K/2] (same dtype), metadata buffer.
// Throws std::invalid_argument naming the row and chunk of the first chunk (in row-major order)
// with too many nonzeros (-0.0 counts as zero, NaN as nonzero).
void sptc_compress(const Matrix& dense, const Matrix& values, const Matrix& metadata);

// values [M, K/2] + metadata buffer -> dense [M, K] (zeros elsewhere), bit-exact. Throws naming
// the row and chunk of the first code that is not legal for mma.sp::ordered_metadata.
void sptc_decompress(const Matrix& values, const Matrix& metadata, const Matrix& dense);

// In-group positions of an already N:M-compressed matrix (uint8 [M, K/2], as NMTensor.indices:
// strictly increasing pairs in [0, 4) for 2:4, one position in {0, 1} per pair for f32 1:2) ->
// metadata buffer of a matrix of `value_dtype`. Throws on shape errors and invalid positions.
void sptc_metadata_from_positions(const Matrix& positions, DType value_dtype, const Matrix& metadata);

// Raw-pointer forms: meta = sptc_meta_words(...) uint32 words (the first version of this API).
int64_t sptc_meta_words(DType dtype, int64_t rows, int64_t cols);
void sptc_compress(const Matrix& dense, const Matrix& values, uint32_t* meta);
void sptc_decompress(const Matrix& values, const uint32_t* meta, const Matrix& dense);
void sptc_metadata_from_positions(const Matrix& positions, DType value_dtype, int64_t cols, uint32_t* meta);

}  // namespace hinm
