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

namespace hinm {
namespace cuda_layout {

constexpr int kSlotAlign = 128;  // slot rows are padded to the largest thread-block height
constexpr int kKeptAlign = 64;   // kept columns are padded to the pipeline stage depth
constexpr uint32_t kPaddingWord = 0x44444444u;  // every nibble 0x4 = positions (0, 1): legal, ascending

HINM_HD int64_t slots_padded(int64_t slots) { return (slots + kSlotAlign - 1) / kSlotAlign * kSlotAlign; }
HINM_HD int64_t kept_padded(int64_t kept) { return (kept + kKeptAlign - 1) / kKeptAlign * kKeptAlign; }
// Number of 32-wide K slices (one mma.sp.m16n8k32 each) in the padded kept columns.
HINM_HD int64_t kslices(int64_t kept) { return kept_padded(kept) / 32; }

// ---- sparse-tensor-core lane words (f16/bf16, m16n8k32) -------------------------------------
// Inside one 128-byte block covering 32 rows x 32 dense columns (sptc-metadata.md 1.5 and 2.2(6)):
// row ii (0..31) and 4-column chunk q (0..7) -> lane 4*(ii%8) + 2*(ii/16) + q/4, bits
// 16*((ii/8)&1) + 4*(q%4). These two functions are the sptc lane/bit math; they match
// sptc_index.hpp's definitions and can be swapped for them.
HINM_HD int sptc_lane(int row_in_32, int chunk_in_8) {
  return 4 * (row_in_32 % 8) + 2 * (row_in_32 / 16) + chunk_in_8 / 4;
}
HINM_HD int sptc_shift(int row_in_32, int chunk_in_8) { return 16 * ((row_in_32 / 8) & 1) + 4 * (chunk_in_8 % 4); }
// The 4-bit code of a 2:4 chunk whose values sit at positions p0 < p1.
HINM_HD uint32_t sptc_code(int p0, int p1) { return uint32_t(p0) | uint32_t(p1) << 2; }

// Word index (in u32) of slot row `slot`, 4-column chunk `chunk` (global kept-column chunk).
HINM_HD int64_t lane_word_index(int64_t slot, int64_t chunk, int64_t kslices) {
  const int64_t kk = chunk / 8;
  return ((slot / 32) * kslices + kk) * 32 + sptc_lane(int(slot % 32), int(chunk % 8));
}
HINM_HD int lane_word_shift(int64_t slot, int64_t chunk) { return sptc_shift(int(slot % 32), int(chunk % 8)); }

// ---- fragment-ordered values ----------------------------------------------------------------
// Compressed value c (0..Kt/2-1) of slot row `slot`. Within a 16-row x 16-compressed-column block
// the register fragment is the dense mma.m16n8k16 A fragment (sptc-metadata.md 1.5):
// lane 4g+t holds (g, 2t..2t+1), (g+8, 2t..), (g, 8+2t..), (g+8, 8+2t..).
HINM_HD int frag_lane(int row_in_16, int col_in_16) { return 4 * (row_in_16 % 8) + (col_in_16 % 8) / 2; }
HINM_HD int frag_element(int row_in_16, int col_in_16) {
  return 4 * (col_in_16 / 8) + 2 * (row_in_16 / 8) + col_in_16 % 2;
}
HINM_HD int64_t frag_value_index(int64_t slot, int64_t c, int64_t kslices) {
  const int r = int(slot % 16), cc = int(c % 16);
  return (((slot / 16) * kslices + c / 16) * 32 + frag_lane(r, cc)) * 8 + frag_element(r, cc);
}

}  // namespace cuda_layout

// Writes the device-ready layout of a 2:4 HiNM (or plain 2:4) weight with 16-bit values:
// frag_values: the values' dtype, [slots_padded(S), kept_padded(Kt)/2] elements (fragment order,
// not row-major); lane_words: u32 [slots_padded(S)/32, kept_padded(Kt)]. Throws
// std::invalid_argument for another pattern, dtype, wrong output shapes or illegal positions.
void pack_cuda_layout(const HiNMView& w, const Matrix& frag_values, const Matrix& lane_words);

}  // namespace hinm
