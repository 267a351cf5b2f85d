// The CUDA HiNM SpMM (sparse tensor cores, mma.sp m16n8k32, f16/bf16 with f32 accumulation).
// Plain pointers and integers only, so CPU-only consumers can include this header; in builds
// without CUDA every function throws std::runtime_error("hinm was built without CUDA").
#pragma once

#include <cstdint>

#include "hinm/dtype.hpp"

namespace hinm {

// A 2:4 HiNM (or plain 2:4) weight on the device, in the layout of hinm/cuda_layout.hpp.
// All pointers are device pointers.
struct HiNMDeviceView {
  int64_t rows = 0;                  // R, original output rows
  int64_t cols = 0;                  // K, original input columns
  int v = 0;                         // rows per tile (slots = ceil(R/v)*v)
  int64_t kept = 0;                  // Kt, kept columns per tile (multiple of 4)
  DType dtype = DType::f16;          // f16 or bf16: values, x, y and bias share it
  const void* frag_values = nullptr; // [slots_padded, kept_padded/2], fragment order
  const uint32_t* lane_words = nullptr;  // [slots_padded/32, kept_padded]
  const int32_t* col_idx = nullptr;  // [T, Kt] kept columns per tile; null = identity (Kt == K)
  const int64_t* row_perm = nullptr; // [R]; slot s -> output row; null = identity

  int64_t tiles() const { return (rows + v - 1) / v; }
  int64_t slots() const { return tiles() * v; }
};

// Y[row_perm[s], :] = sum_j W[s, j] * X[col_idx[s/v][j], :] (+ bias[row_perm[s]]), i.e. Y = W X
// in original coordinates. x: [K, n] row-major with row stride ldx (elements, a multiple of 8,
// ldx >= roundup(n, 8), 16-byte aligned base; columns n..roundup(n,8)-1 are read and ignored).
// y: [R, n] row-major, row stride ldy (>= n). bias: [R] or null. accumulate: add to y instead of
// overwriting it (the sum is rounded once). stream: a cudaStream_t (null =
// default stream). Asynchronous; throws std::invalid_argument for bad arguments and
// std::runtime_error for CUDA errors. v must be a multiple of 32 when there are several tiles
// with a col_idx list (T > 1).
void cuda_hinm_spmm(const HiNMDeviceView& w, const void* x, int64_t n, int64_t ldx, void* y, int64_t ldy,
                    const void* bias, bool accumulate, void* stream);

}  // namespace hinm
