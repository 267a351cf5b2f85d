// The device-ready layout the CUDA HiNM kernel reads, and the index math that defines it.
//
// The canonical HiNM container (hinm_format.hpp) keeps values [S, Kt/2] row-major and in-group
// positions; the kernel wants each warp's operands as single wide loads, so a host converter
// (pack_cuda_layout) writes two arrays, both padded with zeros / legal codes to
// S_pad = roundup(S, 128) slot rows and Kp = roundup(Kt, 64) kept columns:
//
//   fragment values  [S_pad/16][Kp/32][32 lanes][8]  (f16/bf16): the compressed A fragment of
//                    mma.sp.m16n8k32 for 16 slot rows x 32 kept columns, lane by lane, so one
//                    16-byte load per lane is a whole fragment and a warp reads 512 contiguous bytes.
//   lane words       [S_pad/32][Kp/32][32 lanes]  (u32): the metadata operand `e` of each lane for
//                    32 slot rows (two m16 tiles: selector 0 for rows 0-15, 1 for rows 16-31) x 32
//                    kept columns. The inside of each 128-byte block is exactly the CUTLASS/PyTorch
//                    lane-word block (sptc-metadata.md 2.2(6)); only the block order differs: row
//                    block major, K slices consecutive (CUTLASS orders K-slice major), so a thread
//                    block's metadata for one pipeline stage is contiguous.
//
// Everything here is HINM_HD so the CUDA kernel, the host converter and the CPU emulation test
// compute the same offsets.
#pragma once

#include <cstdint>

#include "hinm/hinm_format.hpp"
#include "hinm/hostdevice.hpp"
#include "hinm/matrix.hpp"
#include "hinm/sptc_index.hpp"

namespace hinm {
namespace cuda_layout {

constexpr int kSlotAlign = 128;  // slot rows are padded to the largest thread-block height
constexpr int kKeptAlign = 64;   // kept columns are padded to the pipeline stage depth

HINM_HD int64_t slots_padded(int64_t slots) { return (slots + kSlotAlign - 1) / kSlotAlign * kSlotAlign; }
HINM_HD int64_t kept_padded(int64_t kept) { return (kept + kKeptAlign - 1) / kKeptAlign * kKeptAlign; }
// Number of 32-wide K slices (one mma.sp.m16n8k32 each) in the padded kept columns.
HINM_HD int64_t kslices(int64_t kept) { return kept_padded(kept) / 32; }

// ---- lane words (f16/bf16, m16n8k32) ---------------------------------------------------------
// Inside a 128-byte block the lane/bit math is sptc_index.hpp's: row ii of the 32-row block is row
// ii % 16 of the m16 tile read with selector sptc::block_selector(ii); only the block order is ours.
// Word index (in u32) of slot row `slot`, 4-column chunk `chunk` (global kept-column chunk).
HINM_HD int64_t lane_word_index(int64_t slot, int64_t chunk, int64_t kslices) {
  const int64_t kk = chunk / 8;
  const int ii = int(slot % 32);
  return ((slot / 32) * kslices + kk) * 32 + sptc::e_lane(ii % 16, int(chunk % 8), sptc::block_selector(ii));
}
HINM_HD int lane_word_shift(int64_t slot, int64_t chunk) { return sptc::e_shift(int(slot % 16), int(chunk % 8)); }

// ---- fragment-ordered values ----------------------------------------------------------------
// Element e (0..7) of `lane` (register e/2, half e%2) in the fragment block of m16 tile `mtile`,
// K slice `kk` holds compressed value (16*mtile + sptc::a_frag_row(lane, e/2),
// 16*kk + sptc::a_frag_ccol(lane, e/2, e%2)).
HINM_HD int64_t frag_block_index(int64_t mtile, int64_t kk, int lane, int e, int64_t kslices) {
  return ((mtile * kslices + kk) * 32 + lane) * 8 + e;
}

}  // namespace cuda_layout

// Writes the device-ready layout of a 2:4 HiNM (or plain 2:4) weight with 16-bit values:
// frag_values: the values' dtype, [slots_padded(S), kept_padded(Kt)/2] elements (fragment order,
// not row-major); lane_words: u32 [slots_padded(S)/32, kept_padded(Kt)]. Throws
// std::invalid_argument for another pattern, dtype, wrong output shapes or illegal positions.
void pack_cuda_layout(const HiNMView& w, const Matrix& frag_values, const Matrix& lane_words);

}  // namespace hinm
