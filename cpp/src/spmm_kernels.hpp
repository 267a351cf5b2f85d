// Private to the spmm implementation: the per-ISA kernels the driver (spmm.cpp) calls.
#pragma once

#include <cstdint>

#include "hinm/dtype.hpp"

namespace hinm::detail {

// Panel kernel ("many activations"): for each row r, acc[r][0..nb) (=|+=) sum_j vals[r][j] *
// panel[offs[r][j] .. + nb), j in order. The panel holds the tile's gathered activations for a
// chunk of kept columns, nb (a multiple of 16) batch lanes per column.
struct PanelArgs {
  int64_t rows = 0;
  const float* vals = nullptr;
  int64_t vals_stride = 0;
  const int32_t* offs = nullptr;  // in floats, = local column * nb
  int64_t offs_stride = 0;
  int64_t cnt = 0;                // values per row in this chunk
  const float* panel = nullptr;
  int nb = 16;
  float* acc = nullptr;
  int64_t acc_stride = 0;
  bool first = true;              // acc starts at zero
  // Read by the positions kernel (PanelPosKernels) instead of offs: in-group positions [rows][cnt]
  // of this chunk, the panel holding each group's m columns of nb lanes in turn.
  const uint8_t* pos = nullptr;
  int64_t pos_stride = 0;
  int n = 2, m = 4;
  // 2:4 only, optional (AVX-512 kernel): 2-bit position words instead of pos, as in the rows pack;
  // value 16q+e of row i at vals + i * vals_stride + q * vals_step + e, its position in bits 2e..2e+1
  // of word i * word_stride + q * word_step (words of 4 bytes, little-endian, any alignment).
  // cnt a multiple of 16.
  const uint8_t* words = nullptr;
  int64_t word_stride = 0, word_step = 1, vals_step = 16;  // in words, words, floats
};

// Panel gather: dst column c (nb floats) = src + (cols ? cols[c] : c) * src_stride, lanes >= valid zero.
struct GatherArgs {
  const float* src = nullptr;
  int64_t src_stride = 0;
  const int32_t* cols = nullptr;
  int64_t count = 0;
  int nb = 16;
  int valid = 16;
  float* dst = nullptr;
};

// Rows kernel ("few activations"): out[r*4 + b] = sum over kept columns of W[r] . x[b], with W's
// rows decoded from 16-column bit masks (values in order fill the set bits).
struct RowsArgs {
  int64_t rows = 0;
  const uint16_t* masks = nullptr;
  int64_t mask_stride = 0;
  int64_t blocks = 0;
  const void* vals = nullptr;
  DType vdt = DType::f32;
  int64_t vals_stride = 0;        // in elements
  int batch = 1;                  // 1..4
  const float* x[4] = {nullptr, nullptr, nullptr, nullptr};  // each dense over the kept columns
  int64_t kept = 0;
  float* out = nullptr;           // [rows][4]
  // m == 2n patterns decode straight from the positions (a two-register permute per 16 values);
  // the masks above are then unused and may be null.
  const uint8_t* pos = nullptr;
  int64_t pos_stride = 0;
  int n = 2, m = 4;
  int64_t cnt = 0;                // values per row
  // Optional, for m <= 4: the same positions as words of 16 2-bit fields, one per whole step of 16
  // values (spmm.hpp, build_spmm_masks), a quarter of the bytes; a kernel may read pos instead.
  const uint32_t* pos_words = nullptr;
  int64_t word_stride = 0;        // in words
  // The weight streams from memory (larger than about half the last-level cache): the kernel
  // prefetches the next group of rows into L2 (costs a little when the weight is cache-resident).
  bool prefetch = false;
  // The rows pack (hinm/spmm.hpp, RowsPack) or null; slot0 = the slot of row 0 of this call.
  const void* pvals = nullptr;
  const uint8_t* ppos = nullptr;
  int64_t slot0 = 0;
};

// Slots per block of the rows pack.
constexpr int kPackRows = 8;
// The rows pack and the position words store positions in 2 bits (16 to a uint32) for these
// patterns (m == 2n).
inline bool pack_positions_2bit(int m) { return m <= 4; }

// The rows kernel reads positions directly (no masks) for these patterns.
inline bool rows_uses_positions(int n, int m) { return m == 2 * n && 16 % n == 0; }

struct SpmmKernels {
  const char* name;
  void (*panel)(const PanelArgs&);
  void (*rows)(const RowsArgs&);  // null: this variant has no rows kernel (panel for every batch)
  void (*to_f32)(const void* src, DType t, int64_t count, float* dst);
  // offs[j] = ((j / n) * m + min(pos[j], m - 1)) * nb for j < cnt (cnt a multiple of n).
  void (*offsets)(const uint8_t* pos, int64_t cnt, int n, int m, int nb, int32_t* offs);
  // false: the rows kernel reads the positions for every pattern (never the masks).
  bool rows_use_masks = true;
  // dst[c] = src[cols[c]] for c < count (the rows path's per-tile activation gather); entries
  // outside [0, limit) read 0 and make the result false. Null: the driver's scalar loop.
  bool (*gather_cols)(const float* src, const int32_t* cols, int64_t count, uint32_t limit, float* dst) = nullptr;
};

// Activation transpose: dst[c * nb + l] = src[l * src_stride + c] for c < cols, l < rows (<= nb);
// lanes rows..nb-1 zero. nb a multiple of 8.
struct TransposeArgs {
  const float* src = nullptr;
  int64_t src_stride = 0;
  int rows = 0;
  int64_t cols = 0;
  int nb = 8;
  float* dst = nullptr;
};

// Result store of consecutive output rows: out[b * out_b + i] (= or +=) acc[i * acc_stride + b]
// (+ bias[i]) for i < rows, b < batch.
struct StoreArgs {
  const float* acc = nullptr;
  int64_t acc_stride = 0;
  int64_t rows = 0;
  int64_t batch = 0;
  float* out = nullptr;
  int64_t out_b = 0;
  const float* bias = nullptr;
  bool accumulate = false;
};

// The panel path with positions read in the kernel (no offsets table); nb in {8, 16, 32, 48, 64}.
struct PanelPosKernels {
  void (*panel)(const PanelArgs&);
  void (*gather)(const GatherArgs&);
  void (*transpose)(const TransposeArgs&);
  void (*store)(const StoreArgs&);
};

const SpmmKernels& kernels_generic();
const SpmmKernels& kernels_avx2();
const SpmmKernels& kernels_avx512();  // only call where the CPU supports avx512f/bw/vl
const PanelPosKernels* panel_pos_avx512();  // the same condition; null where not compiled

}  // namespace hinm::detail
