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

// A second copy of a weight laid out for the few-activation kernels (batch 1..12; patterns with
// m == 2n, AVX-512 machines; elsewhere it is ignored), which the many-activation kernel reads too
// for float32 2:4 (past batch 12: 8 rows a stream instead of 64 short row pieces per chunk of
// columns, 1.05-1.16x at batch 64-1952): in every block of 8 slots, the values and
// positions of each whole step of 16 values are stored together,
//   values[((s / 8) * (cnt / 16) + j / 16) * 128 + (s % 8) * 16 + j % 16] = value j of slot s
// (cnt = values per slot; blocks of 8 below slots(), steps below cnt / 16), so a kernel reads one
// stream for 8 rows instead of 16 short ones (measured ~20% faster at batch 1 on weights larger
// than L2). The positions follow the same order: one byte each, except for m <= 4 (1:2, 2:4),
// where the 16 positions of a step share one little-endian uint32 (2 bits each, value j%16 in
// bits 2*(j%16)..), a quarter of the bytes (batch 1 ~7% faster again: the kernel streams from
// the cache at its bandwidth). Not updated with the weight: after editing its arrays, pack again
// (a stale pack mixes old values, in whole steps, with new ones, in the last partial step).
struct RowsPack {
  const void* values = nullptr;        // the weight's value dtype
  const uint8_t* positions = nullptr;
};

// Values in the pack of w; 0 when w's pattern has none (m != 2n).
int64_t rows_pack_size(const HiNMView& w);
// Bytes of the pack's positions: rows_pack_size(w) / 4 for m <= 4, rows_pack_size(w) otherwise.
int64_t rows_pack_position_bytes(const HiNMView& w);
// Fills values (w's dtype, rows_pack_size(w) of them) and positions (rows_pack_position_bytes);
// std::invalid_argument on invalid positions (validate_nm_positions).
void pack_rows(const HiNMView& w, void* values, uint8_t* positions);

// out [R, N] (=|+=) W @ b, with b [K, N] float32. `masks` and `packed`: optional kernel-side
// layouts of w (below), read instead of being derived per call; `packed` must be pack_rows(w)
// of this w (its arrays are read without bounds checks). An out sharing memory with b (or, for
// linear, x or bias) is std::invalid_argument.
void spmm(const HiNMView& w, const Matrix& b, const Matrix& out, bool accumulate = false,
          const Matrix* masks = nullptr, const RowsPack* packed = nullptr);

// out [N, R] (=|+=) x Wᵀ + bias, with x [N, K] float32 and bias float32 [R] or null.
void linear(const Matrix& x, const HiNMView& w, const float* bias, const Matrix& out, bool accumulate = false,
            const Matrix* masks = nullptr, const RowsPack* packed = nullptr);

// Kernel-side layout derived from the positions, built once per tensor (callers may cache it and
// pass it as `masks` above), [slots, spmm_masks_cols(w)]:
// - 1:2 and 2:4 (spmm_masks_are_words): uint32 position words, word q of a slot holding the
//   positions of its values 16q..16q+15 in 2 bits each (value 16q+e in bits 2e..2e+1). Optional:
//   without them the kernels read the byte positions, a quarter more memory traffic per value of
//   float32 (batch-1 2:4 products measured 13-18% slower on weights larger than the L2 cache).
// - other patterns with m = 2n: none (spmm_masks_cols(w) == 0; the kernels read the positions).
// - the rest: uint16 bit masks, one per block of 16 kept columns (spmm_mask_blocks), bit i set
//   when kept column 16*block+i holds a value; built per call when not given.
// Built from invalid positions: std::invalid_argument. Not updated with the weight: after an edit
// of the positions, build again (a stale table gives wrong products).
int64_t spmm_mask_blocks(const HiNMView& w);
bool spmm_masks_are_words(const HiNMView& w);
int64_t spmm_masks_cols(const HiNMView& w);
void build_spmm_masks(const HiNMView& w, const Matrix& masks /* [slots, spmm_masks_cols(w)] */);

// Testing aid: restrict the kernels to "generic" or "avx2" (no effect above the machine's own
// level) or "" for the best the machine runs. Returns the variant now in use.
std::string spmm_force_isa(const std::string& isa);

}  // namespace hinm
