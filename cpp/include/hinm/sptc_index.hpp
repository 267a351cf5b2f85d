// Index math of NVIDIA sparse-tensor-core (mma.sp) metadata, shared by host code, CUDA kernels
// and the CPU warp emulation (all HINM_HD). See ../shared-docs: sptc-metadata.md §1.5 and §2.2(6).
//
// Codes: one 4-bit code per chunk, i0 | i1 << 2 with i0 < i1 (mma.sp::ordered_metadata). A chunk
// is 4 dense elements (2:4, 16- and 8-bit types) or 2 (1:2, tf32, whose codes are 0x4 / 0xE).
//
// Storage ("lanes"): 128-byte blocks of 32 u32 words; word L of a block is the `e` operand of lane
// L. Blocks are ordered K-slice-major with row blocks fastest. PyTorch's CUTLASS layout
// (meta_reordered) is exactly these bytes viewed as int16 [M, K/16] (f16/bf16), int16 [M, K/8]
// (f32) or int32 [M, K/32] (int8).
#pragma once

#include <cstdint>

#include "hinm/hostdevice.hpp"

namespace hinm {
namespace sptc {

// Where the code of one chunk lives: u32 word index in the metadata buffer and bit shift in it.
struct CodeSlot {
  int64_t word;
  int shift;
};

// 16-bit metadata (f16/bf16 mma.sp.m16n8k32, tf32 m16n8k16): a block covers 32 rows x 8 chunks
// (32 dense f16 columns / 16 dense f32 columns). Row ii of the block: g = ii % 8, half = (ii/8)&1,
// selector = ii / 16; chunk q of the slice: u = q / 4 (which 16-bit column), nibble q % 4.
HINM_HD int lane16(int row_in_32, int chunk_in_8) {
  return 4 * (row_in_32 % 8) + 2 * (row_in_32 / 16) + chunk_in_8 / 4;
}
HINM_HD int shift16(int row_in_32, int chunk_in_8) { return 16 * ((row_in_32 / 8) & 1) + 4 * (chunk_in_8 % 4); }

// 32-bit metadata (int8 mma.sp.m16n8k64, selector 0): a block covers 16 rows x 16 chunks (64 dense
// int8 columns). lane = 4 * (ii % 8) + 2 * u + ii / 8, u = q / 8; nibble q % 8 of the whole word.
HINM_HD int lane32(int row_in_16, int chunk_in_16) {
  return 4 * (row_in_16 % 8) + 2 * (chunk_in_16 / 8) + row_in_16 / 8;
}
HINM_HD int shift32(int chunk_in_16) { return 4 * (chunk_in_16 % 8); }

// The slot of chunk `chunk` of row `row` in an M-row matrix. wide = true for 32-bit (int8) metadata.
HINM_HD CodeSlot code_slot(int64_t row, int64_t chunk, int64_t rows, bool wide) {
  if (wide) {
    const int64_t block = (chunk / 16) * (rows / 16) + row / 16;
    return {block * 32 + lane32(int(row % 16), int(chunk % 16)), shift32(int(chunk % 16))};
  }
  const int64_t block = (chunk / 8) * (rows / 32) + row / 32;
  return {block * 32 + lane16(int(row % 32), int(chunk % 8)), shift16(int(row % 32), int(chunk % 8))};
}

HINM_HD uint32_t code(int i0, int i1) { return uint32_t(i0) | uint32_t(i1) << 2; }

// True for the six ascending 2:4 codes (0x4, 0x8, 0x9, 0xC, 0xD, 0xE).
HINM_HD bool legal_code(uint32_t c) { return (c & 3u) < (c >> 2 & 3u); }
// True for the two tf32 (1:2) codes.
HINM_HD bool legal_code_tf32(uint32_t c) { return c == 0x4u || c == 0xEu; }

// Register fragments of mma.sp.m16n8k32 (f16/bf16), lane = 4g + t: the compressed A fragment is the
// dense m16n8k16 A fragment of the 16 x 16 compressed tile. Register element e (0..7) of a lane
// holds compressed (row, col):
HINM_HD int frag_a_row(int lane, int e) { return lane / 4 + 8 * ((e / 2) % 2); }
HINM_HD int frag_a_col(int lane, int e) { return 2 * (lane % 4) + e % 2 + 8 * (e / 4); }
// B (dense 32 x 8, k x n): element e (0..7) of a lane holds (k, n).
HINM_HD int frag_b_k(int lane, int e) { return 2 * (lane % 4) + e % 2 + 8 * (e / 2); }
HINM_HD int frag_b_n(int lane) { return lane / 4; }
// C/D (16 x 8, f32): element e (0..3) of a lane holds (row, n).
HINM_HD int frag_c_row(int lane, int e) { return lane / 4 + 8 * (e / 2); }
HINM_HD int frag_c_n(int lane, int e) { return 2 * (lane % 4) + e % 2; }

}  // namespace sptc
}  // namespace hinm
