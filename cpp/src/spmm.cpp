// The spmm / linear driver: checks, work partition, activation gathers, stores. The arithmetic is
// in the per-ISA kernels (spmm_kernels.hpp).
#include "hinm/spmm.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "hinm/build_info.hpp"
#include "hinm/dispatch.hpp"
#include "hinm/nm_format.hpp"
#include "hinm/parallel.hpp"
#include "spmm_kernels.hpp"

namespace hinm {

namespace {

using detail::SpmmKernels;

// ----------------------------------------------------------------------------------------------
// ISA selection
// ----------------------------------------------------------------------------------------------
std::atomic<int> g_isa_limit{2};  // 0 generic, 1 avx2, 2 avx512 (capped by the machine)

int machine_isa() {
  static const int level = [] {
    const std::string isa = cpu_isa();
    return isa == "avx512" ? 2 : isa == "avx2" ? 1 : 0;
  }();
  return level;
}

int isa_level() { return std::min(machine_isa(), g_isa_limit.load()); }

const SpmmKernels& kernels() {
  switch (isa_level()) {
    case 2: return detail::kernels_avx512();
    case 1: return detail::kernels_avx2();
    default: return detail::kernels_generic();
  }
}

// ----------------------------------------------------------------------------------------------
// Checks
// ----------------------------------------------------------------------------------------------
[[noreturn]] void bad(const std::string& what) { throw std::invalid_argument(what); }

// Returns whether row_perm is given and the identity: then the products drop it (compress gives
// unpermuted weights an explicit identity, and a permuted store costs a second pass over the output).
bool check_view(const HiNMView& w) {
  w.pattern.validate();
  if (w.rows < 0 || w.cols < 0) bad("weight: negative shape");
  if (w.v < 1) bad("weight: tile height v must be >= 1, got " + std::to_string(w.v));
  if (w.kept < 0 || w.kept > w.cols || w.kept % w.pattern.m)
    bad("weight: kept columns " + std::to_string(w.kept) + " must be a multiple of m=" +
        std::to_string(w.pattern.m) + " in [0, " + std::to_string(w.cols) + "]");
  if (!w.col_idx && w.kept != w.cols) bad("weight: col_idx is required when not every column is kept");
  require_weight_dtype(w.values.dtype, "weight values");
  const int64_t slots = w.rows == 0 ? 0 : w.slots();
  require(w.values, "weight values", w.values.dtype, slots, w.compressed_cols());
  require(w.positions, "weight positions", DType::u8, slots, w.compressed_cols());
  // Checked on every call (the arrays may have been edited in place since the last one), so the
  // checks are branch-free passes; the slow loops only run to name the offending entry. col_idx
  // is checked by the caller: check_col_idx, or the rows path's checked gathers.
  if (w.row_perm) {  // a permutation: every output row written by exactly one slot
    thread_local std::vector<uint8_t> seen;
    seen.assign(size_t(w.rows), 0);
    // Local pointers: a byte store may alias anything, so through `seen` and `w` the compiler
    // would reload both (and call __tls_get_addr) on every iteration, 4x the cost of the loop.
    uint8_t* const marks = seen.data();
    const int64_t* const perm = w.row_perm;
    const int64_t rows = w.rows;
    uint64_t outside = 0, moved = 0;
    for (int64_t s = 0; s < rows; ++s) {
      outside |= uint64_t(perm[s]) >= uint64_t(rows);
      moved |= uint64_t(perm[s]) ^ uint64_t(s);
    }
    unsigned repeated = 0;
    if (!outside)
      for (int64_t s = 0; s < rows; ++s) {
        uint8_t& mark = marks[size_t(perm[s])];
        repeated |= mark;
        mark = 1;
      }
    if (outside || repeated) {
      std::fill(seen.begin(), seen.end(), uint8_t(0));
      for (int64_t s = 0; s < w.rows; ++s) {
        const int64_t r = w.row_perm[s];
        if (r < 0 || r >= w.rows || seen[size_t(r)])
          bad("weight: row_perm is not a permutation of range(" + std::to_string(w.rows) + ") (at slot " +
              std::to_string(s) + ")");
        seen[size_t(r)] = 1;
      }
    }
    return moved == 0;
  }
  return false;
}

// The view the kernels see: without an identity row_perm.
HiNMView kernel_view(const HiNMView& w) {
  HiNMView k = w;
  if (check_view(w)) k.row_perm = nullptr;
  return k;
}

// Throws naming the first col_idx entry outside [0, K), if any.
void name_bad_col_idx(const HiNMView& w) {
  for (int64_t i = 0; i < w.tiles() * w.kept; ++i)
    if (w.col_idx[i] < 0 || w.col_idx[i] >= w.cols)
      bad("weight: col_idx[" + std::to_string(i) + "]=" + std::to_string(w.col_idx[i]) + " is outside [0, " +
          std::to_string(w.cols) + ")");
}

void check_col_idx(const HiNMView& w) {
  if (!w.col_idx) return;
  const int64_t n = w.tiles() * w.kept;
  const uint32_t limit = uint32_t(w.cols);
  uint32_t outside = 0;
  for (int64_t i = 0; i < n; ++i) outside |= uint32_t(uint32_t(w.col_idx[i]) >= limit);
  if (outside) name_bad_col_idx(w);
}

// dst[c] = src[cols[c] * stride] for c < count; entries outside [0, limit) read 0 and make the
// result false. The rows path checks col_idx this way, in the gather it does anyway (a separate
// pass over col_idx cost ~10% of a batch-1 product).
bool gather_checked(const SpmmKernels& k, const float* src, int64_t stride, const int32_t* cols, int64_t count,
                    int64_t limit, float* dst) {
  if (stride == 1 && k.gather_cols) return k.gather_cols(src, cols, count, uint32_t(limit), dst);
  uint32_t outside = 0;
  for (int64_t c = 0; c < count; ++c) {
    const uint32_t col = uint32_t(cols[c]);
    const bool out = col >= uint64_t(limit);
    outside |= uint32_t(out);
    dst[c] = out ? 0.0f : src[int64_t(col) * stride];
  }
  return !outside;
}

// ----------------------------------------------------------------------------------------------
// Problem description shared by spmm and linear
// ----------------------------------------------------------------------------------------------
struct Problem {
  const HiNMView* w;
  int64_t batch;          // N
  const float* act;       // activation element (b, c) at act[b*act_b + c*act_c]
  int64_t act_b, act_c;
  float* out;             // output element (b, r) at out[b*out_b + r*out_r]
  int64_t out_b, out_r;
  const float* bias;      // [R] or null
  bool accumulate;
  const Matrix* masks;    // u16 [slots, blocks] or null
  bool linear_layout;     // act is x [N, K] (rows contiguous): the panel path transposes it once
  const RowsPack* packed; // or null
};

struct RowItem {
  int64_t tile, s0, s1;  // slots [s0, s1) of one tile, all < R
};

std::vector<RowItem> row_items(const HiNMView& w, int64_t rc) {
  std::vector<RowItem> items;
  for (int64_t t = 0; t < w.tiles(); ++t) {
    const int64_t end = std::min(w.rows, (t + 1) * w.v);
    for (int64_t s = t * w.v; s < end; s += rc) items.push_back({t, s, std::min(end, s + rc)});
  }
  return items;
}

int64_t out_row(const HiNMView& w, int64_t s) { return w.row_perm ? w.row_perm[s] : s; }

inline void store(const Problem& p, int64_t b, int64_t r, float v) {
  if (p.bias) v += p.bias[r];
  float* dst = p.out + b * p.out_b + r * p.out_r;
  *dst = p.accumulate ? *dst + v : v;
}

const int32_t* tile_cols(const HiNMView& w, int64_t t) { return w.col_idx ? w.col_idx + t * w.kept : nullptr; }

// Per-thread scratch that only grows (kernels run on the library's persistent threads).
// 64-byte aligned, so the kernels' 64-byte vector loads never straddle cache lines.
template <class T, int Slot>
T* scratch(size_t n) {
  thread_local std::vector<T> buf;
  const size_t pad = 64 / sizeof(T);
  if (buf.size() < n + pad) buf.resize(n + pad);
  const uintptr_t addr = reinterpret_cast<uintptr_t>(buf.data());
  return reinterpret_cast<T*>((addr + 63) & ~uintptr_t(63));
}

// ----------------------------------------------------------------------------------------------
// Rows path: few activations, weights decoded from masks
// ----------------------------------------------------------------------------------------------
// Below this many multiply-adds, waking a second thread costs more than it saves: one chunk
// (measured at batch 1, HiNM 75%, 2 threads: 12K MACs 3.02 vs 3.03 us, 18K 3.61 vs 3.51, 37K 5.83 vs 5.03).
bool small_problem(const Problem& p) {
  return double(p.w->rows) * double(p.w->compressed_cols()) * double(p.batch) < double(1 << 14);
}

// The portable rows kernel against the portable panel kernel (16 lanes per value whatever the
// batch): measured crossover.
constexpr int64_t kPortableRowsBatch = 6;

bool use_rows_path(const SpmmKernels& k, const HiNMView& w, int64_t n) {
  if (!k.rows || n >= 16) return false;
  if (!k.rows_use_masks) return n <= kPortableRowsBatch;  // portable kernels: one scalar FMA per activation
  // Measured crossover against the panel path (1 thread, 2:4 and HiNM 75%, 3072x768 to 4096x4096).
  if (detail::rows_uses_positions(w.pattern.n, w.pattern.m)) return n <= 12;
  // Mask-expansion patterns, per 16 kept columns of one row: a mask decode per call of up to 4
  // activations plus one FMA per activation, against the panel path's cost per value (fitted on
  // 3072x768 at 1 thread: 1:4 and 2:8 rows up to batch 4, 3:8 up to 6, 1:8 panel from batch 2).
  const double density = double(w.pattern.n) / w.pattern.m;
  const double rows_cost = 8.0 * double((n + 3) / 4) + double(n);
  const double panel_cost = 64.0 * density;
  return rows_cost < panel_cost;
}

// Whether a product stores its results in slot order and then permute_output_rows: a permuted
// x W^T (rows of out contiguous) that overwrites its output.
bool stores_in_slot_order(const Problem& p) {
  return p.linear_layout && p.out_r == 1 && p.w->row_perm && !p.accumulate;
}

// out[b, row_perm[s]] = out[b, s] (+ bias[row_perm[s]]) for every output row b of x W^T: the
// second pass for a permuted weight, whose results were stored in slot order. Storing each slot's
// results straight to their permuted rows scatters single floats over every output row, from
// every thread (cache misses, and lines passed between the cores: unpermuted over permuted,
// 1536x384 HiNM at batch 1952 3.3x, at batch 8 1.75x, 3072x768 at batch 1 1.6x); in slot order
// each thread's stores are whole lines of its own, and this pass touches each row once, in L1.
// It reads through the inverse permutation (out[r] = slot inv[r]): sequential stores, and the
// loads need not wait for earlier stores, ~2x faster than the scatter out[row_perm[s]] = slot s
// (0.6-0.9 vs 1.4-1.8 cycles per element on an Intel Xeon; 1536x384 HiNM 75% at batch 32 spent
// ~10% of its time in the scatter). Same additions as the direct store: bit-identical.
class OutputPermutation {
 public:
  explicit OutputPermutation(const HiNMView& w) : rows_(w.rows) {
    // 32-bit indices where they suffice: ~20% faster than 64-bit ones.
    if (rows_ <= INT32_MAX) fill(w, narrow_);
    else fill(w, wide_);
  }

  // Output rows [b0, b1), serially.
  void apply(const Problem& p, int64_t b0, int64_t b1) const {
    if (!narrow_.empty()) apply(p, narrow_.data(), b0, b1);
    else apply(p, wide_.data(), b0, b1);
  }

 private:
  int64_t rows_;
  std::vector<int32_t> narrow_;
  std::vector<int64_t> wide_;

  template <class Index>
  void fill(const HiNMView& w, std::vector<Index>& inv) {
    inv.resize(size_t(rows_));
    for (int64_t s = 0; s < rows_; ++s) inv[size_t(w.row_perm[s])] = Index(s);
  }

  template <class Index>
  void apply(const Problem& p, const Index* from, int64_t b0, int64_t b1) const {
    float* slot = scratch<float, 8>(size_t(rows_));
    for (int64_t b = b0; b < b1; ++b) {
      float* out = p.out + b * p.out_b;
      std::copy_n(out, rows_, slot);
      if (p.bias) {
        for (int64_t r = 0; r < rows_; ++r) out[r] = slot[from[r]] + p.bias[r];
      } else {
        for (int64_t r = 0; r < rows_; ++r) out[r] = slot[from[r]];
      }
    }
  }
};

void permute_output_rows(const Problem& p) {
  const OutputPermutation perm(*p.w);
  parallel_for(p.batch, 16, [&](int64_t b0, int64_t b1) { perm.apply(p, b0, b1); });
}

// Writes the kernel's totals (results[i * 4 + b]) of rows [s0, s0 + rows) for activations
// [b0, b0 + nb): the common no-bias, no-accumulate, identity-permutation case without branches;
// with slot_order, to the slots as if row_perm were the identity, without bias.
void store_rows(const Problem& p, int64_t s0, int64_t rows, int64_t b0, int nb, const float* results,
                bool slot_order) {
  const HiNMView& w = *p.w;
  if (slot_order || (!p.bias && !p.accumulate && !w.row_perm)) {
    for (int b = 0; b < nb; ++b) {
      float* dst = p.out + (b0 + b) * p.out_b + s0 * p.out_r;
      for (int64_t i = 0; i < rows; ++i) dst[i * p.out_r] = results[i * 4 + b];
    }
    return;
  }
  if (!p.bias && !p.accumulate && nb == 1) {  // batch 1 through the row permutation
    float* dst = p.out + b0 * p.out_b;
    const int64_t* perm = w.row_perm + s0;
    for (int64_t i = 0; i < rows; ++i) dst[perm[i] * p.out_r] = results[i * 4];
    return;
  }
  for (int64_t i = 0; i < rows; ++i) {
    const int64_t r = out_row(w, s0 + i);
    for (int b = 0; b < nb; ++b) store(p, b0 + b, r, results[i * 4 + b]);
  }
}

// Weights larger than this stream from memory rather than the last-level cache: half of one
// Zen 3/4 CCD's 32 MiB L3 (sysconf reports the whole package's L3, e.g. 320 MiB, which one core
// never sees), leaving room for other data and other processes.
constexpr double kStreamingBytes = 16.0 * 1024 * 1024;

void run_rows(const Problem& p, const SpmmKernels& k, const Matrix& masks) {
  const HiNMView& w = *p.w;
  const int64_t blocks = spmm_mask_blocks(w);
  const double weight_bytes = double(w.slots()) * double(w.compressed_cols()) * (dtype_size(w.values.dtype) + 1);
  const bool prefetch = weight_bytes > kStreamingBytes;
  const RowsPack* pack = p.packed && p.packed->values && p.packed->positions && rows_pack_size(w) > 0 ? p.packed : nullptr;
  // Activations are used in place when they are already dense over the kept columns; otherwise
  // each item gathers them once, so gathering items take whole tiles (up to 128 rows).
  const bool direct = !w.col_idx && (p.linear_layout || p.act_c == 1);
  const int64_t chunk = direct ? 32 : std::max<int64_t>(32, std::min<int64_t>(w.v, 128));
  const auto items = row_items(w, chunk);
  // Small problems run on the calling thread; otherwise about 8 chunks per thread (balance
  // without an atomic per item). Rows never depend on the partition: results are identical.
  const int64_t count = int64_t(items.size());
  const int64_t grain = small_problem(p) ? count : std::max<int64_t>(1, count / (8 * int64_t(get_num_threads())));
  const int esize = dtype_size(w.values.dtype);
  const bool slot_order = stores_in_slot_order(p);
  std::atomic<bool> cols_ok{true};
  parallel_for(int64_t(items.size()), grain, [&](int64_t i0, int64_t i1) {
    for (int64_t it = i0; it < i1; ++it) {
      const RowItem& item = items[size_t(it)];
      const int64_t rows = item.s1 - item.s0;
      const int32_t* cols = tile_cols(w, item.tile);
      float* results = scratch<float, 0>(size_t(rows * 4));
      float* gathered = scratch<float, 1>(size_t(4 * blocks * 16));
      for (int64_t b0 = 0; b0 < p.batch; b0 += 4) {
        detail::RowsArgs a;
        a.rows = rows;
        if (masks.data && masks.dtype == DType::u32) {
          a.pos_words = masks.row<const uint32_t>(item.s0);
          a.word_stride = masks.stride;
        } else if (masks.data) {
          a.masks = masks.row<const uint16_t>(item.s0);
          a.mask_stride = masks.stride;
        }
        a.pos = w.positions.row<const uint8_t>(item.s0);
        a.pos_stride = w.positions.stride;
        a.n = w.pattern.n;
        a.m = w.pattern.m;
        a.cnt = w.compressed_cols();
        a.blocks = blocks;
        a.vals = static_cast<const char*>(w.values.data) + item.s0 * w.values.stride * esize;
        a.vdt = w.values.dtype;
        a.vals_stride = w.values.stride;
        a.batch = int(std::min<int64_t>(4, p.batch - b0));
        a.kept = w.kept;
        a.prefetch = prefetch;
        if (pack) {
          a.pvals = pack->values;
          a.ppos = pack->positions;
          a.slot0 = item.s0;
        }
        a.out = results;
        for (int b = 0; b < a.batch; ++b) {
          const float* src = p.act + (b0 + b) * p.act_b;
          if (direct) {
            a.x[b] = src;
            continue;
          }
          float* g = gathered + b * blocks * 16;
          if (cols) {
            if (!gather_checked(k, src, p.act_c, cols, w.kept, w.cols, g)) cols_ok.store(false, std::memory_order_relaxed);
          } else {
            for (int64_t c = 0; c < w.kept; ++c) g[c] = src[c * p.act_c];
          }
          a.x[b] = g;
        }
        k.rows(a);
        store_rows(p, item.s0, rows, b0, a.batch, results, slot_order);
      }
    }
  });
  if (!cols_ok.load()) name_bad_col_idx(w);
  if (slot_order) permute_output_rows(p);
}

// ----------------------------------------------------------------------------------------------
// Panel path: many activations, nb batch lanes per vector group
// ----------------------------------------------------------------------------------------------
// Batch lanes per panel column: 8 or 24 (one or three 256-bit vectors, as fast per FLOP as 512 on
// Zen 4), or 16, 32, 48, 64 (more lanes per loaded value; 64 keeps a 64-column chunk in 16 KiB).
// Lanes past the batch cost as much as used ones: 24 serves batches 17-24 (a one-sentence
// MiniLM forward is 19 tokens) at 3/4 of the cost of 32.
int panel_lanes(int64_t n) { return n <= 8 ? 8 : n <= 16 ? 16 : n <= 24 ? 24 : n <= 32 ? 32 : n <= 48 ? 48 : 64; }

// Columns [k0, k1) of lane block blk of x [N, K] -> dst [K][nb] (dst points at column 0),
// zero-padded lanes.
void transpose_block(const Problem& p, int nb, int64_t blk, int64_t k0, int64_t k1, float* dst,
                     const detail::PanelPosKernels* fast) {
  const int64_t valid = std::min<int64_t>(nb, p.batch - blk * nb);
  const float* src = p.act + blk * nb * p.act_b;
  if (fast && p.act_c == 1) {
    detail::TransposeArgs t;
    t.src = src + k0;
    t.src_stride = p.act_b;
    t.rows = int(valid);
    t.cols = k1 - k0;
    t.nb = nb;
    t.dst = dst + k0 * nb;
    return fast->transpose(t);
  }
  // Column-outer: contiguous writes; the nb source rows being read stay in L1.
  for (int64_t c = k0; c < k1; ++c) {
    float* d = dst + c * nb;
    for (int64_t l = 0; l < valid; ++l) d[l] = src[l * p.act_b + c * p.act_c];
    for (int64_t l = valid; l < nb; ++l) d[l] = 0.0f;
  }
}

// Lanes per block for x W^T on `threads` threads. A batch that fits one block but could give each
// thread a block of 16 or 32 lanes is split into such blocks, which the threads then take whole
// (run_panel): one block's (block, row item) units, with x transposed and the output permuted in
// passes of their own, hardly ran faster on 2 threads than on one (384x384 HiNM at batch 32:
// 31.7 vs 32.8 us). HiNM 75%, 2 threads, batch 19 / 24 / 32 / 64: 384x384 34 / 33 / 30 / 56 us ->
// 23 / 25 / 25 / 39 us, 1536x384 98 / 101 / 87 / 159 -> 82 / 81 / 83 / 141 us. Not for 33-48 rows
// (two 32-lane blocks pad a third of the work: 384x1536 at batch 48 102 -> 116 us) nor up to 16.
int panel_lanes_for(const Problem& p, int64_t threads) {
  const int nb = panel_lanes(p.batch);
  if (!p.linear_layout || threads < 2 || p.batch <= 16 || (p.batch + nb - 1) / nb >= threads) return nb;
  const int64_t per_thread = (p.batch + threads - 1) / threads;
  const int split = per_thread <= 16 ? 16 : per_thread > 24 && per_thread <= 32 ? 32 : nb;
  return (p.batch + split - 1) / split >= threads ? split : nb;  // a block for every thread
}

// x [N, K] -> xT [blocks][K][nb], zero-padded lanes.
void transpose_activations(const Problem& p, int nb, int64_t nblocks, float* xt,
                           const detail::PanelPosKernels* fast) {
  const int64_t K = p.w->cols;
  const int64_t kstep = 256;
  const int64_t kchunks = (K + kstep - 1) / kstep;
  parallel_for(nblocks * kchunks, 1, [&](int64_t i0, int64_t i1) {
    for (int64_t it = i0; it < i1; ++it) {
      const int64_t blk = it / kchunks, k0 = (it % kchunks) * kstep, k1 = std::min(K, k0 + kstep);
      transpose_block(p, nb, blk, k0, k1, xt + blk * K * nb, fast);
    }
  });
}

void gather_portable(const detail::GatherArgs& g) {
  for (int64_t c = 0; c < g.count; ++c) {
    const float* src = g.src + (g.cols ? int64_t(g.cols[c]) : c) * g.src_stride;
    std::copy_n(src, g.valid, g.dst + c * g.nb);
    std::fill(g.dst + c * g.nb + g.valid, g.dst + (c + 1) * g.nb, 0.0f);
  }
}

// Writes an item's results acc [rows][width] (lane b = batch element b) to the output rows; with
// slot_order, to the item's slots as if row_perm were the identity, without bias (see
// permute_output_rows).
void store_item(const Problem& p, const detail::PanelPosKernels* fast, const RowItem& item, const float* acc,
                int64_t width, int64_t b0, int64_t b1, bool slot_order) {
  const HiNMView& w = *p.w;
  const int64_t rows = item.s1 - item.s0, r0 = slot_order ? item.s0 : out_row(w, item.s0);
  bool consecutive = p.out_r == 1;  // the item's slots are consecutive output rows of x W^T
  for (int64_t i = 1; consecutive && !slot_order && i < rows; ++i) consecutive = out_row(w, item.s0 + i) == r0 + i;
  if (fast && consecutive) {
    detail::StoreArgs s;
    s.acc = acc;
    s.acc_stride = width;
    s.rows = rows;
    s.batch = b1 - b0;
    s.out = p.out + b0 * p.out_b + r0;
    s.out_b = p.out_b;
    s.bias = p.bias && !slot_order ? p.bias + r0 : nullptr;
    s.accumulate = p.accumulate;
    return fast->store(s);
  }
  if (p.out_b == 1) {  // spmm: an output row holds the batch contiguously
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t b = b0; b < b1; ++b) store(p, b, out_row(w, item.s0 + i), acc[i * width + b - b0]);
    return;
  }
  // Batch-outer: consecutive slots land in one output row (linear) and stay in cache.
  for (int64_t b = b0; b < b1; ++b)
    for (int64_t i = 0; i < rows; ++i) store(p, b, out_row(w, item.s0 + i), acc[i * width + b - b0]);
}

// Chunk c (values [c*step, ...)) of slot row s0+i goes to pack + c*step*rows + i*(its length).
void pack_item(const HiNMView& w, const SpmmKernels& k, int64_t s0, int64_t rows, int64_t step, float* vpack,
               uint8_t* ppack) {
  const int64_t cc = w.compressed_cols();
  const int esize = dtype_size(w.values.dtype);
  for (int64_t i = 0; i < rows; ++i) {
    const char* vrow = static_cast<const char*>(w.values.data) + (s0 + i) * w.values.stride * esize;
    const uint8_t* prow = w.positions.row<const uint8_t>(s0 + i);
    for (int64_t j0 = 0; j0 < cc; j0 += step) {
      const int64_t cnt = std::min(step, cc - j0);
      float* vdst = vpack + j0 * rows + i * cnt;
      if (w.values.dtype == DType::f32) std::memcpy(vdst, vrow + j0 * esize, size_t(cnt) * sizeof(float));
      else k.to_f32(vrow + j0 * esize, w.values.dtype, cnt, vdst);
      std::memcpy(ppack + j0 * rows + i * cnt, prow + j0, size_t(cnt));
    }
  }
}

// Whether the rows pack holds chunk values [j0, j0 + cnt) of every slot of `item`: whole 8-slot
// blocks from the item's first slot and whole 16-value steps (the pack leaves out the slots past
// the last whole block and the values past the last whole step).
bool in_rows_pack(const HiNMView& w, const RowItem& item, int64_t j0, int64_t cnt) {
  constexpr int64_t B = detail::kPackRows;
  return item.s0 % B == 0 && item.s1 <= w.slots() / B * B && j0 % 16 == 0 && cnt % 16 == 0 &&
         j0 + cnt <= w.compressed_cols() / 16 * 16;
}

// The panel kernel on chunk values [j0, j0 + a.cnt) of `item`, read from the float32 2:4 rows
// pack: one call per 8-slot block, whose 8 rows x 16 values per step are one contiguous stream.
// The weight's own rows are a separate short stream each per chunk (64 rows x 128 bytes, a row
// apart): reading the pack was 1.05-1.16x faster at batch 64-1952 (2:4, 2 threads, Intel Xeon).
void panel_from_pack(const HiNMView& w, const RowsPack& pack, const RowItem& item, int64_t j0, int64_t width,
                     const detail::PanelArgs& a, const detail::PanelPosKernels* fast) {
  constexpr int64_t B = detail::kPackRows;
  const int64_t steps = w.compressed_cols() / 16;
  for (int64_t s0 = item.s0; s0 < item.s1; s0 += B) {
    detail::PanelArgs b = a;
    const int64_t at = (s0 / B * steps + j0 / 16) * B;  // first row of (block, step) in the pack
    b.rows = std::min(B, item.s1 - s0);
    b.vals = static_cast<const float*>(pack.values) + at * 16;
    b.vals_stride = 16;
    b.vals_step = 16 * B;
    b.words = pack.positions + at * 4;
    b.word_stride = 1;
    b.word_step = B;
    b.acc = a.acc + (s0 - item.s0) * width;
    fast->panel(b);
  }
}

// How the panel path runs a product (run_panel).
struct PanelPlan {
  const detail::PanelPosKernels* fast;  // AVX-512 kernels, or null (portable, offsets table)
  int nb;                               // batch lanes per block
  int64_t width;                        // accumulator row stride (floats)
  int64_t kc;                           // kept columns per chunk
  bool slot_order;                      // results go to slot rows (permute_output_rows after)
  const RowsPack* pack = nullptr;       // float32 2:4 rows pack the AVX-512 kernel reads, or null
  // Every item's values (as float32) and positions packed once for the whole call (pack_item,
  // item at offset s0 * compressed_cols), or null: items pack their own when they need to.
  const float* call_vals = nullptr;
  const uint8_t* call_pos = nullptr;
};

// Every item's values converted to float32 and packed (pack_item) once for the whole call, in the
// calling thread's scratch, instead of once per lane block and item: float16 values, 2 threads,
// 2:4 BERT-base shapes, 1.07-1.18x faster at batch 512, 1.10-1.21x at 1952, 1.02-1.03x at 256
// (two blocks per thread); 0.94-1.00x at 128 (one block per thread), hence the threshold at the
// call site. Float32 values gain nothing from it (0.97-1.00x at batch 512). Like all scratch the
// buffer is kept for the next call: the largest such weight's values once more as float32 (plus a
// byte per value) per calling thread.
void pack_call(const HiNMView& w, const SpmmKernels& k, const std::vector<RowItem>& items, PanelPlan& plan) {
  const int64_t cc = w.compressed_cols(), slots = items.back().s1;
  float* vals = scratch<float, 9>(size_t(slots * cc));
  uint8_t* pos = scratch<uint8_t, 10>(size_t(slots * cc));
  parallel_for(int64_t(items.size()), 1, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const RowItem& it = items[size_t(i)];
      pack_item(w, k, it.s0, it.s1 - it.s0, plan.kc / w.pattern.m * w.pattern.n, vals + it.s0 * cc, pos + it.s0 * cc);
    }
  });
  plan.call_vals = vals;
  plan.call_pos = pos;
}

// One unit of the panel path: the rows of `item` against lane blocks [blk0, blk1), stored to the
// output. xt: those blocks' transposed activations, [blk1 - blk0][K][nb] (null for spmm, whose
// b is read in place).
void panel_unit(const Problem& p, const SpmmKernels& k, const PanelPlan& plan, const RowItem& item, int64_t blk0,
                int64_t blk1, const float* xt) {
  const HiNMView& w = *p.w;
  const detail::PanelPosKernels* fast = plan.fast;
  const int n = w.pattern.n, m = w.pattern.m, nb = plan.nb;
  const int64_t K = w.cols, kc = plan.kc, width = plan.width;
  const int64_t rows = item.s1 - item.s0;
  const int32_t* cols = tile_cols(w, item.tile);
  float* acc = scratch<float, 3>(size_t(rows * width));
  const int64_t cc = w.compressed_cols();
  // With several batch blocks (or values to convert), the item's values (as float32) and
  // positions are packed chunk-major first: each chunk's rows are then one contiguous block,
  // read once per batch block, instead of `rows` short pieces a weight row apart (measured
  // ~15% faster at batch 128; at one block the copy costs about what it saves). A call that
  // packed every item already (pack_call) hands out the item's part of that instead.
  const float* vpack = nullptr;
  const uint8_t* ppack = nullptr;
  if (plan.call_vals) {
    vpack = plan.call_vals + item.s0 * cc;
    ppack = plan.call_pos + item.s0 * cc;
  } else if (blk1 - blk0 > 1 || w.values.dtype != DType::f32) {
    float* v = scratch<float, 4>(size_t(rows * cc));
    uint8_t* q = scratch<uint8_t, 7>(size_t(rows * cc));
    pack_item(w, k, item.s0, rows, kc / m * n, v, q);
    vpack = v;
    ppack = q;
  }
  const bool pack = vpack != nullptr;
  int32_t* obuf = fast ? nullptr : scratch<int32_t, 5>(size_t(rows * (kc / m * n)));
  float* pbuf = scratch<float, 6>(size_t(kc * nb));
  for (int64_t c0 = 0; c0 < w.kept; c0 += kc) {
    const int64_t kcc = std::min(kc, w.kept - c0);
    const int64_t cnt = kcc / m * n, j0 = c0 / m * n;
    detail::PanelArgs a;
    a.rows = rows;
    a.cnt = cnt;
    a.nb = nb;
    a.acc_stride = width;
    a.first = c0 == 0;
    if (pack) {
      a.vals = vpack + j0 * rows;
      a.vals_stride = cnt;
      a.pos = ppack + j0 * rows;
      a.pos_stride = cnt;
    } else {
      a.vals = w.values.row<const float>(item.s0) + j0;
      a.vals_stride = w.values.stride;
      a.pos = w.positions.row<const uint8_t>(item.s0) + j0;
      a.pos_stride = w.positions.stride;
    }
    a.n = n;
    a.m = m;
    if (!fast) {  // in-group positions -> panel offsets (clamped: memory safety)
      a.offs = obuf;
      a.offs_stride = cnt;
      for (int64_t i = 0; i < rows; ++i)
        k.offsets(a.pos + i * a.pos_stride, cnt, n, m, nb, obuf + i * cnt);
    }
    const bool from_pack = plan.pack && !pack && in_rows_pack(w, item, j0, cnt);
    for (int64_t blk = blk0; blk < blk1; ++blk) {
      if (xt && !cols) {
        a.panel = xt + ((blk - blk0) * K + c0) * nb;
      } else {
        detail::GatherArgs g;
        g.count = kcc;
        g.nb = nb;
        g.dst = pbuf;
        g.cols = cols ? cols + c0 : nullptr;
        if (xt) {  // rows of xT
          g.src = xt + ((blk - blk0) * K + (cols ? 0 : c0)) * nb;
          g.src_stride = nb;
          g.valid = nb;
        } else {  // spmm: rows of b, lanes [blk*nb, ...) zero-padded
          g.src = p.act + (cols ? 0 : c0) * p.act_c + blk * nb;
          g.src_stride = p.act_c;
          g.valid = int(std::min<int64_t>(nb, p.batch - blk * nb));
        }
        fast ? fast->gather(g) : gather_portable(g);
        a.panel = pbuf;
      }
      a.acc = acc + (blk - blk0) * nb;
      if (from_pack) panel_from_pack(w, *plan.pack, item, j0, width, a, fast);
      else fast ? fast->panel(a) : k.panel(a);
    }
  }
  store_item(p, fast, item, acc, width, blk0 * nb, std::min(p.batch, blk1 * nb), plan.slot_order);
}

void run_panel(const Problem& p, const SpmmKernels& k) {
  const HiNMView& w = *p.w;
  PanelPlan plan;
  // AVX-512: the kernel reads positions itself; elsewhere they become an offsets table first.
  plan.fast = isa_level() == 2 ? detail::panel_pos_avx512() : nullptr;
  const int m = w.pattern.m;
  const int64_t threads = get_num_threads();
  const int nb = plan.nb = panel_lanes_for(p, threads);
  const int64_t nblocks = (p.batch + nb - 1) / nb;
  // Big batches go one lane block at a time, every item per block: the block's slice of x (K x nb
  // floats) stays in L2 while the items stream by (all blocks at once read x from L3 for every
  // item: ~1.2x slower at batch 512), and an item's accumulators (64 rows x nb) stay in L1 beside
  // the panel chunk (two blocks at a time, 37 KB of accumulators and a 16 KB chunk overflowed a
  // 48 KB L1: float32, 1 thread, 1.05-1.25x slower at batch 128-1952 on an Intel Xeon, 2:4 and
  // HiNM). Other value types go two blocks at a time where the blocks are not shared out whole
  // (below): their conversion to float32 per item and group is then shared (~5% faster at batch
  // 512 then; with whole blocks one at a time was 4-22% faster in 16 of 18 cells, float16
  // values, 2 threads, and 3-7% slower in two).
  const bool whole_blocks =
      p.linear_layout && nblocks >= threads && (nblocks % threads == 0 || nblocks >= 4 * threads);
  const int64_t group_blocks = w.values.dtype == DType::f32 || whole_blocks ? 1 : 2;
  const int64_t groups = (nblocks + group_blocks - 1) / group_blocks;
  plan.width = std::min(nblocks, group_blocks) * nb + 16;  // +16: no power-of-two stride
  plan.kc = std::max<int64_t>(m, (16384 / (nb * 4)) / m * m);
  const int64_t K = w.cols;
  // Slot order needs the vector store (store_item's other stores go through row_perm).
  plan.slot_order = plan.fast && stores_in_slot_order(p);
  const bool pack_given = p.packed && p.packed->values && p.packed->positions && rows_pack_size(w) > 0;
  if (plan.fast && pack_given && w.pattern.n == 2 && w.pattern.m == 4 && w.values.dtype == DType::f32) {
    plan.pack = p.packed;
    plan.kc = plan.kc / 32 * 32;  // whole 16-value steps per chunk (24 and 48 lanes: 168 -> 160, 84 -> 64 columns)
  }
  const auto items = row_items(w, 64);
  if (whole_blocks) {
    // Blocks enough to share out whole (evenly, or at most ~1/8 of the time idle at the end):
    // each thread transposes a block of x into its own buffer, runs every item on it and, for a
    // permuted weight, permutes the block's output rows, while both are still in its L2.
    // Transposing all of x first and permuting all of the output last sent x, its transpose and
    // the output through L3 or memory once more each: HiNM 75%, random row permutation, 2
    // threads, Intel Xeon: 384x384 at batch 128 / 512 / 1952 83 / 320 / 1396 us -> 61 / 231 /
    // 931 us, 1536x384 315 / 1168 / 5131 -> 244 / 1015 / 3701 us (plain 2:4 10-20% faster too).
    // Uneven splits of a few blocks lost more to the idle thread than they won (3072x768 at
    // batch 192, 3 blocks: 1.27x slower).
    std::optional<OutputPermutation> perm;
    if (plan.slot_order) perm.emplace(w);
    if (w.values.dtype != DType::f32 && nblocks >= std::max<int64_t>(4, 2 * threads)) pack_call(w, k, items, plan);
    parallel_for(nblocks, small_problem(p) ? nblocks : 1, [&](int64_t b0, int64_t b1) {
      float* xb = scratch<float, 2>(size_t(K * nb));
      for (int64_t blk = b0; blk < b1; ++blk) {
        transpose_block(p, nb, blk, 0, K, xb, plan.fast);
        for (const RowItem& item : items) panel_unit(p, k, plan, item, blk, blk + 1, xb);
        if (perm) perm->apply(p, blk * nb, std::min(p.batch, (blk + 1) * nb));
      }
    });
    return;
  }
  float* xt = nullptr;
  if (p.linear_layout) {
    xt = scratch<float, 2>(size_t(nblocks * K * nb));
    transpose_activations(p, nb, nblocks, xt, plan.fast);
  }
  const int64_t units = groups * int64_t(items.size());
  const int64_t grain = small_problem(p) ? units : 1;
  parallel_for(units, grain, [&](int64_t u0, int64_t u1) {
    for (int64_t u = u0; u < u1; ++u) {
      const RowItem& item = items[size_t(u % int64_t(items.size()))];
      const int64_t blk0 = u / int64_t(items.size()) * group_blocks;
      const int64_t blk1 = std::min(nblocks, blk0 + group_blocks);
      panel_unit(p, k, plan, item, blk0, blk1, xt ? xt + blk0 * K * nb : nullptr);
    }
  });
  if (plan.slot_order) permute_output_rows(p);
}

void run(const Problem& p) {
  const HiNMView& w = *p.w;
  if (p.batch == 0 || w.rows == 0) return;
  if (w.kept == 0) {  // nothing kept: the product is zero
    for (int64_t r = 0; r < w.rows; ++r)
      for (int64_t b = 0; b < p.batch; ++b) store(p, b, r, 0.0f);
    return;
  }
  const SpmmKernels& k = kernels();
  if (!use_rows_path(k, w, p.batch)) {
    check_col_idx(w);
    return run_panel(p, k);
  }
  const int64_t blocks = spmm_mask_blocks(w);
  if (detail::rows_uses_positions(w.pattern.n, w.pattern.m)) {
    // Position words are optional (the kernels read the positions otherwise): never built per call.
    if (!p.masks || spmm_masks_cols(w) == 0) return run_rows(p, k, Matrix{});
    require(*p.masks, "masks", DType::u32, w.slots(), spmm_masks_cols(w));
    return run_rows(p, k, *p.masks);
  }
  if (!k.rows_use_masks) return run_rows(p, k, Matrix{});
  if (p.masks) {
    require(*p.masks, "masks", DType::u16, w.slots(), blocks);
    return run_rows(p, k, *p.masks);
  }
  std::vector<uint16_t> own(size_t(w.slots() * blocks));
  const Matrix masks = make_matrix(own.data(), DType::u16, w.slots(), blocks);
  build_spmm_masks(w, masks);
  run_rows(p, k, masks);
}

}  // namespace

// ----------------------------------------------------------------------------------------------
// Public entry points
// ----------------------------------------------------------------------------------------------
namespace {

// The 16 positions pos[0..16) (each < 4) in 2 bits each, pos[e] in bits 2e..2e+1.
uint32_t position_word(const uint8_t* pos) {
  uint32_t word = 0;
  for (int e = 0; e < 16; ++e) word |= uint32_t(pos[e]) << (2 * e);
  return word;
}

// Position words: word q of slot s holds the positions of values 16q..16q+15 in 2 bits each.
void build_position_words(const HiNMView& w, const Matrix& words, int64_t slots) {
  // The kernels index activations with these fields unchecked: the positions are checked first.
  validate_nm_positions(w.positions, w.pattern);
  const int64_t steps = spmm_masks_cols(w);
  parallel_for(slots, 64, [&](int64_t s0, int64_t s1) {
    for (int64_t s = s0; s < s1; ++s) {
      const uint8_t* pos = w.positions.row<const uint8_t>(s);
      uint32_t* out = words.row<uint32_t>(s);
      for (int64_t q = 0; q < steps; ++q) out[q] = position_word(pos + q * 16);
    }
  });
}

}  // namespace

int64_t rows_pack_size(const HiNMView& w) {
  if (!detail::rows_uses_positions(w.pattern.n, w.pattern.m) || w.rows == 0) return 0;
  return w.slots() / detail::kPackRows * (w.compressed_cols() / 16) * detail::kPackRows * 16;
}

int64_t rows_pack_position_bytes(const HiNMView& w) {
  return detail::pack_positions_2bit(w.pattern.m) ? rows_pack_size(w) / 4 : rows_pack_size(w);
}

void pack_rows(const HiNMView& w, void* values, uint8_t* positions) {
  check_view(w);
  const int64_t size = rows_pack_size(w);
  if (size == 0) return;
  const int64_t steps = w.compressed_cols() / 16, blocks = w.slots() / detail::kPackRows;
  // The kernels index activations with the packed positions unchecked: checked here first (the
  // error names the first bad group whatever the thread count).
  validate_nm_positions(w.positions, w.pattern);
  const size_t esize = size_t(dtype_size(w.values.dtype));
  const bool two_bit = detail::pack_positions_2bit(w.pattern.m);
  parallel_for(blocks, 16, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b)
      for (int64_t q = 0; q < steps; ++q)
        for (int i = 0; i < detail::kPackRows; ++i) {
          const int64_t s = b * detail::kPackRows + i, at = ((b * steps + q) * detail::kPackRows + i) * 16;
          const char* src = static_cast<const char*>(w.values.data) + (s * w.values.stride + q * 16) * int64_t(esize);
          std::memcpy(static_cast<char*>(values) + at * int64_t(esize), src, 16 * esize);
          const uint8_t* pos = w.positions.row<const uint8_t>(s) + q * 16;
          if (!two_bit) {
            std::memcpy(positions + at, pos, 16);
            continue;
          }
          const uint32_t word = position_word(pos);
          for (int k = 0; k < 4; ++k) positions[at / 4 + k] = uint8_t(word >> (8 * k));  // little-endian
        }
  });
}

int64_t spmm_mask_blocks(const HiNMView& w) { return (w.kept + 15) / 16; }

bool spmm_masks_are_words(const HiNMView& w) {
  return detail::rows_uses_positions(w.pattern.n, w.pattern.m) && detail::pack_positions_2bit(w.pattern.m);
}

int64_t spmm_masks_cols(const HiNMView& w) {
  if (spmm_masks_are_words(w)) return w.compressed_cols() / 16;
  return detail::rows_uses_positions(w.pattern.n, w.pattern.m) ? 0 : spmm_mask_blocks(w);
}

void build_spmm_masks(const HiNMView& w, const Matrix& masks) {
  check_view(w);
  const int64_t slots = w.rows == 0 ? 0 : w.slots();
  if (detail::rows_uses_positions(w.pattern.n, w.pattern.m)) {
    require(masks, "masks", spmm_masks_are_words(w) ? DType::u32 : DType::u16, slots, spmm_masks_cols(w));
    if (spmm_masks_are_words(w)) build_position_words(w, masks, slots);
    return;
  }
  const int64_t blocks = spmm_mask_blocks(w);
  require(masks, "masks", DType::u16, slots, blocks);
  const int n = w.pattern.n, m = w.pattern.m;
  const int64_t kc = w.compressed_cols();
  parallel_for(slots, 64, [&](int64_t s0, int64_t s1) {
    for (int64_t s = s0; s < s1; ++s) {
      uint16_t* mrow = masks.row<uint16_t>(s);
      std::fill(mrow, mrow + blocks, uint16_t(0));
      const uint8_t* pos = w.positions.row<const uint8_t>(s);
      for (int64_t j = 0; j < kc; ++j) {
        const int q = int(j % n);
        if (pos[j] >= m || (q > 0 && pos[j] <= pos[j - 1]))
          throw std::invalid_argument("weight positions: slot " + std::to_string(s) + ", value " +
                                      std::to_string(j) + ": positions must be < m and strictly increasing "
                                      "within each group");
        const int64_t c = j / n * m + pos[j];
        mrow[c / 16] = uint16_t(mrow[c / 16] | (1u << (c % 16)));
      }
    }
  });
}

void spmm(const HiNMView& weight, const Matrix& b, const Matrix& out, bool accumulate, const Matrix* masks,
          const RowsPack* packed) {
  const HiNMView w = kernel_view(weight);
  require(b, "b", DType::f32, w.cols, -1);
  require(out, "out", DType::f32, w.rows, b.cols);
  require_disjoint(out, b, "b");
  Problem p{&w, b.cols, static_cast<const float*>(b.data), 1, b.stride,
            static_cast<float*>(out.data), 1, out.stride, nullptr, accumulate, masks, false, packed};
  run(p);
}

void linear(const Matrix& x, const HiNMView& weight, const float* bias, const Matrix& out, bool accumulate,
            const Matrix* masks, const RowsPack* packed) {
  const HiNMView w = kernel_view(weight);
  require(x, "x", DType::f32, -1, w.cols);
  require(out, "out", DType::f32, x.rows, w.rows);
  require_disjoint(out, x, "x");
  if (bias) require_disjoint(out, make_matrix(const_cast<float*>(bias), DType::f32, 1, w.rows), "bias");
  Problem p{&w, x.rows, static_cast<const float*>(x.data), x.stride, 1,
            static_cast<float*>(out.data), out.stride, 1, bias, accumulate, masks, true, packed};
  run(p);
}

std::string spmm_force_isa(const std::string& isa) {
  if (isa == "generic") g_isa_limit = 0;
  else if (isa == "avx2") g_isa_limit = 1;
  else if (isa.empty() || isa == "avx512") g_isa_limit = 2;
  else bad("spmm_force_isa: unknown variant '" + isa + "' (generic, avx2, avx512 or empty)");
  return kernels().name;
}

}  // namespace hinm
