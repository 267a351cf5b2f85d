// Sparse x dense products with an N:M or HiNM weight on the CPU (multithreaded, vectorised).
//
// One kernel family serves both containers: plain N:M is the HiNMView with one tile, identity
// col_idx and identity row_perm. Output rows are written straight to their original positions
// (row_perm applied in the store, padding slots skipped) and the input channels of each tile are
// gathered by col_idx, so permutations cost nothing extra.
//
// Values: float32, float16, bfloat16 or int8 (accumulation in float32). Activations and output:
// float32. Every output element is accumulated in a fixed order by one thread, so results are
// bit-identical for any thread count on a given machine (the vector ISA variant may change float
// rounding, nothing else).
#pragma once

#include <cstdint>
#include <string>

#include "hinm/hinm_format.hpp"
#include "hinm/matrix.hpp"

namespace hinm {

// out [R, N] (=|+=) W @ b, with b [K, N] float32.
void spmm(const HiNMView& w, const Matrix& b, const Matrix& out, bool accumulate = false,
          const Matrix* masks = nullptr);

// out [N, R] (=|+=) x Wᵀ + bias, with x [N, K] float32 and bias float32 [R] or null.
void linear(const Matrix& x, const HiNMView& w, const float* bias, const Matrix& out, bool accumulate = false,
            const Matrix* masks = nullptr);

// Kernel-side layout derived from the positions, built once per tensor (callers may cache it and
// pass it as `masks` above; without it the kernels build it per call when they need it): for every
// slot, one uint16 per block of 16 kept columns, bit i set when kept column 16*block+i holds a value.
int64_t spmm_mask_blocks(const HiNMView& w);
void build_spmm_masks(const HiNMView& w, const Matrix& masks /* u16 [slots, spmm_mask_blocks] */);

// Testing aid: restrict the kernels to "generic" or "avx2" (no effect above the machine's own
// level) or "" for the best the machine runs. Returns the variant now in use.
std::string spmm_force_isa(const std::string& isa);

}  // namespace hinm
