// Thread-block geometry of the HiNM SpMM kernel: which 16-byte chunk each thread copies into
// shared memory, where each warp reads its operands, and which output element each accumulator
// register holds. Plain C++ (HINM_HD) so that tests/cpp/test_cuda_emulation.cpp runs exactly
// these functions through an emulated warp.
//
// Kernel: Y[row_perm[s], n] = sum_j Wk[s, j] * X[col_idx[t][j], n] (+ bias), Wk = the
// vector-compressed [S, Kt] matrix (2:4 along j), t = s / v. One thread block = BM slot rows (all
// in one HiNM tile) x BN columns of X; K advances BK kept columns per pipeline stage. Warps are
// WARPS_M x WARPS_N, each owning WARP_M rows (64 for BM = 128, else 32: MT m16 tiles, each pair
// sharing one lane word with selectors 0 and 1) x 64 columns (eight n8 tiles).
//
// Shared memory per stage: [A fragments | lane words | B rows].
//   A:    [BM/16][BK/32][32 lanes] x 16 B   (copied verbatim from the fragment-ordered values)
//   meta: [BM/32][BK/32][32 lanes] x 4 B    (copied verbatim from the lane words)
//   B:    [BK rows][BN] f16/bf16, the gathered rows X[col_idx[t][j]], 16-byte chunk c of row k
//         stored at chunk c ^ (k % 8) so that ldmatrix.trans reads 8 rows without bank conflicts.
#pragma once

#include <cstdint>

#include "hinm/cuda_layout.hpp"
#include "hinm/hostdevice.hpp"
#include "hinm/sptc_index.hpp"

namespace hinm {
namespace cuda_tile {

constexpr int BN = 128;
constexpr int BK = cuda_layout::kKeptAlign;  // 64 kept columns per stage
constexpr int KSTEPS = BK / 32;              // mma.sp k32 steps per stage
constexpr int WARP_N = 64;
constexpr int WARPS_N = BN / WARP_N;
constexpr int N8 = WARP_N / 8;               // n8 tiles per warp
constexpr int STAGES = 3;
constexpr int B_CHUNKS_PER_ROW = BN / 8;     // 16-byte chunks in one gathered row
constexpr int C_PITCH = BN + 4;              // f32 row pitch of the staged output tile
constexpr int C_CHUNKS_PER_ROW = BN / 8;     // 8 outputs (16 bytes of f16/bf16) per store

template <int BM>
struct Tile {
  static_assert(BM % 32 == 0 && BM <= cuda_layout::kSlotAlign, "BM must be 32, 64 or 128");
  static constexpr int WARP_M = BM == 128 ? 64 : 32;  // 64: each B fragment feeds four m16 tiles
  static constexpr int MT = WARP_M / 16;               // m16 tiles per warp
  static constexpr int WARPS_M = BM / WARP_M;
  static constexpr int THREADS = WARPS_M * WARPS_N * 32;
  // Two blocks per SM fit the shared memory of sm_80/sm_90 for every BM; for BM = 128 this caps
  // registers at 128 per thread (no spills, see tests/python/test_cuda_build.py).
  static constexpr int MIN_BLOCKS = 2;
  static constexpr int A_CHUNKS = BM / 16 * KSTEPS * 32;   // 16 B each
  static constexpr int META_CHUNKS = BM / 32 * KSTEPS * 8;  // 128-B block = 8 chunks
  static constexpr int B_CHUNKS = BK * B_CHUNKS_PER_ROW;
  static constexpr int A_BYTES = A_CHUNKS * 16;
  static constexpr int META_BYTES = META_CHUNKS * 16;
  static constexpr int B_BYTES = B_CHUNKS * 16;
  static constexpr int STAGE_BYTES = A_BYTES + META_BYTES + B_BYTES;
  static constexpr int C_BYTES = BM * C_PITCH * 4;  // the epilogue reuses the pipeline's memory
  static constexpr int SMEM_BYTES = STAGES * STAGE_BYTES > C_BYTES ? STAGES * STAGE_BYTES : C_BYTES;
};

// One 16-byte copy: source offset (bytes, from the array's base), destination offset (bytes, from
// the stage base), and whether the source exists (false = fill with zeros).
struct Chunk {
  int64_t src;
  int dst;
  bool valid;
};

// A fragments: chunk `i` of stage `kt` for the block whose first slot row is slot0.
template <int BM>
HINM_HD Chunk a_chunk(int i, int64_t slot0, int64_t kslices, int64_t kt) {
  const int per_mtile = KSTEPS * 32;  // contiguous in global memory: the K slices of one m16 tile
  const int64_t mtile = slot0 / 16 + i / per_mtile;
  return {((mtile * kslices + kt * KSTEPS) * 32 + i % per_mtile) * 16, i * 16, true};
}

// Lane words: chunk `i` of stage `kt`.
template <int BM>
HINM_HD Chunk meta_chunk(int i, int64_t slot0, int64_t kslices, int64_t kt) {
  const int per_block = KSTEPS * 8;
  const int64_t rblock = slot0 / 32 + i / per_block;
  return {((rblock * kslices + kt * KSTEPS) * 8 + i % per_block) * 16, Tile<BM>::A_BYTES + i * 16, true};
}

// Offset (in elements) of row k, 16-byte chunk c of the B stage.
HINM_HD int b_smem_elem(int k, int c) { return k * BN + ((c ^ (k % 8)) * 8); }

// Gathered rows: chunk `i` of stage `kt`. tile_cols = col_idx row of this HiNM tile (null:
// identity); x is [K, ldx] row-major, columns [n0, n) of interest; 16-bit elements.
template <int BM>
HINM_HD Chunk b_chunk(int i, const int32_t* tile_cols, int64_t kept, int64_t kt, int64_t n0, int64_t n,
                      int64_t ldx) {
  const int k = i / B_CHUNKS_PER_ROW, c = i % B_CHUNKS_PER_ROW;
  const int64_t j = kt * BK + k;
  const int64_t col = n0 + c * 8;
  const bool valid = j < kept && col < n;
  const int64_t xrow = valid ? (tile_cols ? int64_t(tile_cols[j]) : j) : 0;
  return {valid ? (xrow * ldx + col) * 2 : 0, Tile<BM>::A_BYTES + Tile<BM>::META_BYTES + b_smem_elem(k, c) * 2,
          valid};
}

// ---- warp-level reads ------------------------------------------------------------------------
// m16 tiles of the block are numbered 0..BM/16-1; warp row wm owns tiles wm*MT .. wm*MT+MT-1.
// 16-byte A fragment of m16 tile `mtile`, k step `ks`, for `lane`: chunk index in the stage.
HINM_HD int a_frag_chunk(int mtile, int ks, int lane) { return (mtile * KSTEPS + ks) * 32 + lane; }
// Lane word of m16 tile `mtile` (shared by tiles 2p and 2p+1), k step `ks`: u32 index in the stage.
HINM_HD int meta_word(int mtile, int ks, int lane) { return ((mtile / 2) * KSTEPS + ks) * 32 + lane; }
// The sparsity selector of m16 tile `mtile`: even tiles read lanes t=0,1 (selector 0), odd t=2,3.
HINM_HD int selector(int mtile) { return mtile % 2; }
// ldmatrix.x4.trans address (element offset in the B stage) supplied by `lane` for n8 tile `nt`
// of warp column `wn`, k step `ks`: lanes 8i..8i+7 address rows 8i..8i+7 of the k32 slice, so
// the four result registers are the B fragment b0..b3 of mma.m16n8k32.
HINM_HD int b_ldmatrix_elem(int wn, int nt, int ks, int lane) {
  return b_smem_elem(ks * 32 + lane, wn * N8 + nt);
}

// ---- epilogue --------------------------------------------------------------------------------
// Accumulator register `reg` (0..3) of `lane` in an m16n8 tile: row and column inside the tile.
HINM_HD int c_row(int lane, int reg) { return sptc::c_frag_row(lane, reg); }
HINM_HD int c_col(int lane, int reg) { return sptc::c_frag_col(lane, reg); }
// Slot row / column of X handled by (m16 tile mtile / warp column wn, n8 tile nt, lane, reg) in
// the block at slot0/n0.
HINM_HD int64_t out_slot(int64_t slot0, int mtile, int lane, int reg) { return slot0 + mtile * 16 + c_row(lane, reg); }
HINM_HD int64_t out_col(int64_t n0, int wn, int nt, int lane, int reg) {
  return n0 + wn * WARP_N + nt * 8 + c_col(lane, reg);
}

// ---- epilogue staging -------------------------------------------------------------------------
// After the main loop the accumulators go through shared memory (f32, rows padded to C_PITCH
// floats against bank conflicts) so that each output row segment is written with 16-byte stores.
HINM_HD int c_stage_index(int mtile, int wn, int nt, int lane, int reg) {
  return (mtile * 16 + c_row(lane, reg)) * C_PITCH + wn * WARP_N + nt * 8 + c_col(lane, reg);
}
// Store chunk i of the block: row (0..BM-1) and first column (0..BN-8) in the tile.
HINM_HD int c_chunk_row(int i) { return i / C_CHUNKS_PER_ROW; }
HINM_HD int c_chunk_col(int i) { return (i % C_CHUNKS_PER_ROW) * 8; }

// Thread-block height for a weight: every block must lie inside one HiNM tile (one col_idx row).
// Returns 0 when v admits none (v not a multiple of 32 with per-tile column lists, i.e. more
// than one tile; a single tile takes any height).
inline int block_rows(int v, bool has_col_idx) {
  if (!has_col_idx) return 128;
  for (int bm : {128, 64, 32})
    if (v % bm == 0) return bm;
  return 0;
}

// The block height to launch: the largest valid one, halved (down to 64) while the grid would not
// give every SM two blocks — small batches or few rows otherwise leave most of the GPU idle.
inline int launch_block_rows(int max_bm, int64_t slots, int64_t n, int sm_count) {
  int bm = max_bm;
  const int64_t nblocks = (n + BN - 1) / BN;
  while (bm > 64 && (slots + bm - 1) / bm * nblocks < 2 * int64_t(sm_count)) bm /= 2;
  return bm;
}

}  // namespace cuda_tile
}  // namespace hinm
