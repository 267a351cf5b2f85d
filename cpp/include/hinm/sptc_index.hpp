// Index math of NVIDIA sparse-tensor-core (2:4, and tf32 1:2) metadata, shared by the host
// compressor, CUDA kernels and the CPU warp emulation tests (all functions are HINM_HD).
// Spec: sptc-metadata.md sections 1.5 and 2.2 (design notes).
//
// Vocabulary (one matrix A of M rows x K dense columns):
//   chunk   4 consecutive dense columns of a row (2 for the f32/tf32 1:2 case) holding one 4-bit
//           code i0 | i1 << 2 (i0 < i1: positions of the first / second stored value).
//   element the per-row packing torch calls `meta`: codes_per_elem codes LSB-first in one 16-bit
//           (f16/bf16/f32) or 32-bit (int8) integer; element (i, j) holds chunks [j*n, j*n+n) of row i.
//   block   128 bytes = 32 uint32 words of the reordered buffer; word L is the `e` operand of lane L
//           of one mma.sp (f16/bf16: m16n8k32, f32: tf32 m16n8k16, int8: m16n8k64).
// Two views of the SAME bytes:
//   "cutlass" torch's sparse_semi_structured_from_dense_cutlass meta_reordered: [M, K/(chunk*n)]
//             int16 (int32 for int8), element offsets given by cutlass_offset() below;
//   "lanes"   the buffer read as uint32 [n_blocks, 32]; (block, lane, half) by element_word().
#pragma once

#include <cstdint>

#include "hinm/hostdevice.hpp"

namespace hinm {
namespace sptc {

// ---- geometry per value type ------------------------------------------------------------------
struct Geometry {
  int chunk_width;     // dense columns per code: 4 (2:4) or 2 (tf32 1:2)
  int kept_per_chunk;  // stored values per chunk: 2 or 1
  int codes_per_elem;  // codes per packed metadata element: 4 (16-bit) or 8 (32-bit)
  int elem_bits;       // 16 or 32
  int block_rows;      // rows covered by one 128-byte block: 32 (16-bit meta) or 16 (32-bit meta)
  int row_align;       // rows must be a multiple of this (== block_rows)
  int col_align;       // K must be a multiple of this (an even number of elements per row)

  HINM_HD int elem_cols() const { return chunk_width * codes_per_elem; }  // dense cols per element
  // Dense columns covered by one block (two elements per row).
  HINM_HD int block_cols() const { return 2 * elem_cols(); }
};

enum class ValueKind : int { b16 = 0, f32 = 1, i8 = 2 };  // f16/bf16 share the b16 geometry

HINM_HD Geometry geometry(ValueKind kind) {
  if (kind == ValueKind::f32) return Geometry{2, 1, 4, 16, 32, 32, 16};
  if (kind == ValueKind::i8) return Geometry{4, 2, 8, 32, 16, 16, 64};
  return Geometry{4, 2, 4, 16, 32, 32, 32};
}

// ---- codes -------------------------------------------------------------------------------------
// 2:4 code of positions p0 < p1 (0x4, 0x8, 0x9, 0xC, 0xD, 0xE); tf32 1:2 codes are 0x4 (keep
// element 0) and 0xE (keep element 1): they read as positions of four 16-bit halves.
HINM_HD uint32_t code_of(int p0, int p1) { return uint32_t(p0) | uint32_t(p1) << 2; }
HINM_HD uint32_t code_of_pair_position(int p) { return p == 0 ? 0x4u : 0xEu; }
HINM_HD int code_first(uint32_t code) { return int(code & 3u); }
HINM_HD int code_second(uint32_t code) { return int((code >> 2) & 3u); }
// Legal for mma.sp::ordered_metadata (ascending, distinct); tf32 accepts only 0x4 and 0xE.
HINM_HD bool code_is_ordered(uint32_t code, ValueKind kind) {
  if (kind == ValueKind::f32) return code == 0x4u || code == 0xEu;
  return code < 16u && code_first(code) < code_second(code);
}

// ---- chunk -> packed element (i, j) and nibble --------------------------------------------------
HINM_HD int64_t chunk_elem_col(const Geometry& g, int64_t chunk) { return chunk / g.codes_per_elem; }
HINM_HD int chunk_elem_shift(const Geometry& g, int64_t chunk) { return 4 * int(chunk % g.codes_per_elem); }
HINM_HD int64_t meta_cols(const Geometry& g, int64_t k) { return k / g.elem_cols(); }  // elements per row
HINM_HD int64_t num_blocks(const Geometry& g, int64_t m, int64_t k) {
  return (m / g.block_rows) * (k / g.block_cols());
}
HINM_HD int64_t num_words(const Geometry& g, int64_t m, int64_t k) { return num_blocks(g, m, k) * 32; }

// ---- "lanes" view: element (i, j) -> (block, lane, half) ---------------------------------------
struct WordPos {
  int64_t block;  // 128-byte block (K-slice major, row blocks fastest: torch/CUTLASS order)
  int lane;       // word within the block = the lane whose `e` register it is
  int shift;      // bit offset of the element inside the word (0 or 16; always 0 for 32-bit elements)
  HINM_HD int64_t word() const { return block * 32 + lane; }
};

// sptc-metadata.md 2.2(6). 16-bit elements: row ii of a 32-row block sits in quad g = ii%8, tile
// (selector) ii/16, half (ii/8)&1; the two elements of a block row are the lanes t = 2*sel + u.
// 32-bit elements (int8, m16n8k64, selector 0): lane 4g + 2u + h with h = row half.
HINM_HD WordPos element_word(const Geometry& g, int64_t m, int64_t i, int64_t j) {
  const int64_t row_blocks = m / g.block_rows;
  const int ii = int(i % g.block_rows);
  const int u = int(j % 2);
  WordPos p;
  p.block = (j / 2) * row_blocks + i / g.block_rows;
  if (g.elem_bits == 16) {
    p.lane = 4 * (ii % 8) + 2 * (ii / 16) + u;
    p.shift = 16 * ((ii / 8) & 1);
  } else {
    p.lane = 4 * (ii % 8) + 2 * u + ii / 8;
    p.shift = 0;
  }
  return p;
}

// Word and bit offset of the code of chunk `chunk` of row i.
HINM_HD WordPos chunk_word(const Geometry& g, int64_t m, int64_t i, int64_t chunk) {
  WordPos p = element_word(g, m, i, chunk_elem_col(g, chunk));
  p.shift += chunk_elem_shift(g, chunk);
  return p;
}

// ---- "cutlass" view: element (i, j) -> element offset in meta_reordered -----------------------
// CUTLASS reorder_meta() + ColumnMajorInterleaved<2>, as torch's
// _calculate_meta_reordering_scatter_offsets writes it (sptc-metadata.md 2.2(5)). Kept as a
// separate formula: the tests prove offset == 2*word + shift/16 (16-bit) or == word (32-bit).
HINM_HD int64_t cutlass_offset(const Geometry& g, int64_t m, int64_t i, int64_t j) {
  const int64_t group = g.elem_bits == 16 ? 32 : 16, interweave = g.elem_bits == 16 ? 4 : 2;
  int64_t r = (i / group) * group + (i % 8) * interweave + (i % group) / 8;
  int64_t c = j;
  if (r % 2 == 0 && c % 2 == 1) {
    r += 1;
    c -= 1;
  } else if (r % 2 == 1 && c % 2 == 0) {
    r -= 1;
    c += 1;
  }
  return (c / 2) * (2 * m) + r * 2 + (c % 2);
}

// ---- mma.sp.m16n8k32 f16/bf16 register fragments (sptc-metadata.md 1.5) ---------------------------
// lane = 4*g + t. Coordinates are local to one 16-row tile and one 32-dense-column K slice.
//
// A (compressed 16 x 16 tile): 4 b32 registers a[0..3] per lane, 2 values each (half 0 = low
// 16 bits). Equal to the dense mma.m16n8k16 A fragment on the compressed tile.
HINM_HD int a_frag_row(int lane, int reg) { return lane / 4 + 8 * (reg & 1); }
HINM_HD int a_frag_ccol(int lane, int reg, int half) { return 8 * (reg >> 1) + 2 * (lane % 4) + half; }
// The chunk (0..7 in the 32-column slice) whose two values a register holds.
HINM_HD int a_frag_chunk(int lane, int reg) { return 4 * (reg >> 1) + lane % 4; }
// Inverse: which lane / register / half holds compressed value (row, ccol) of the tile.
HINM_HD int a_frag_lane(int row, int ccol) { return 4 * (row % 8) + (ccol % 8) / 2; }
HINM_HD int a_frag_reg(int row, int ccol) { return 2 * (ccol / 8) + row / 8; }
HINM_HD int a_frag_half(int ccol) { return ccol % 2; }

// B (dense 32 x 8, "col"): 4 b32 registers, b[j] holds k = 8*j + 2t + half, n = g.
HINM_HD int b_frag_k(int lane, int reg, int half) { return 8 * reg + 2 * (lane % 4) + half; }
HINM_HD int b_frag_n(int lane) { return lane / 4; }

// C/D (16 x 8, f32 accumulate): 4 registers, c[i] at row g + 8*(i/2), column 2t + i%2.
HINM_HD int c_frag_row(int lane, int reg) { return lane / 4 + 8 * (reg / 2); }
HINM_HD int c_frag_col(int lane, int reg) { return 2 * (lane % 4) + reg % 2; }

// Metadata: the code of (row r of the 16-row tile, chunk q of the slice) is supplied, for
// selector sel (0 or 1), by lane 4*(r%8) + 2*sel + q/4 at bits [shift+3 : shift] with
// shift = 16*(r/8) + 4*(q%4). Only lanes with (t >> 1) == sel are read by an mma with that selector.
HINM_HD int e_lane(int row, int chunk, int sel) { return 4 * (row % 8) + 2 * sel + chunk / 4; }
HINM_HD int e_shift(int row, int chunk) { return 16 * (row / 8) + 4 * (chunk % 4); }
// In a 32-row lanes block, rows 0-15 form the tile of selector 0 and rows 16-31 that of selector 1,
// so one word per lane serves both: lane L's word is `e` for both mma.sp of the pair.
HINM_HD int block_selector(int row_in_32) { return row_in_32 / 16; }
// The code a lane's `e` word gives the mma for A-register `reg` (row half reg&1, slice half reg>>1):
// valid only on the lane e_lane(...) names; here written from the point of view of the A owner.
HINM_HD uint32_t e_code(uint32_t e_word, int lane, int reg) {
  return (e_word >> (16 * (reg & 1) + 4 * (lane % 4))) & 0xFu;
}
// The lane whose `e` carries the code of A-register `reg` of lane `lane`, for selector sel.
HINM_HD int e_source_lane(int lane, int reg, int sel) { return 4 * (lane / 4) + 2 * sel + (reg >> 1); }

// ---- short forms (the first version of this header; kept for code written against it) -------------
struct CodeSlot {
  int64_t word;
  int shift;
};
// 16-bit metadata block (32 rows x 8 chunks) and 32-bit metadata block (16 rows x 16 chunks).
HINM_HD int lane16(int row_in_32, int chunk_in_8) { return e_lane(row_in_32 % 16, chunk_in_8, row_in_32 / 16); }
HINM_HD int shift16(int row_in_32, int chunk_in_8) { return e_shift(row_in_32 % 16, chunk_in_8); }
HINM_HD int lane32(int row_in_16, int chunk_in_16) { return 4 * (row_in_16 % 8) + 2 * (chunk_in_16 / 8) + row_in_16 / 8; }
HINM_HD int shift32(int chunk_in_16) { return 4 * (chunk_in_16 % 8); }
// Slot of chunk `chunk` of row `row` in an M-row matrix; wide = 32-bit (int8) metadata.
HINM_HD CodeSlot code_slot(int64_t row, int64_t chunk, int64_t rows, bool wide) {
  const WordPos p = chunk_word(geometry(wide ? ValueKind::i8 : ValueKind::b16), rows, row, chunk);
  return {p.word(), p.shift};
}
HINM_HD uint32_t code(int i0, int i1) { return code_of(i0, i1); }
HINM_HD bool legal_code(uint32_t c) { return code_is_ordered(c, ValueKind::b16); }
HINM_HD bool legal_code_tf32(uint32_t c) { return code_is_ordered(c, ValueKind::f32); }
// Fragments indexed by element e of a lane (A, B: 0..7 = register e/2, half e%2; C: 0..3).
HINM_HD int frag_a_row(int lane, int e) { return a_frag_row(lane, e / 2); }
HINM_HD int frag_a_col(int lane, int e) { return a_frag_ccol(lane, e / 2, e % 2); }
HINM_HD int frag_b_k(int lane, int e) { return b_frag_k(lane, e / 2, e % 2); }
HINM_HD int frag_b_n(int lane) { return b_frag_n(lane); }
HINM_HD int frag_c_row(int lane, int e) { return c_frag_row(lane, e); }
HINM_HD int frag_c_n(int lane, int e) { return c_frag_col(lane, e); }

}  // namespace sptc
}  // namespace hinm
