// Host entry of the CUDA HiNM SpMM: argument checks, block-height choice, launch.
// Instantiations: {f16, bf16} x BM {32, 64, 128} (six kernels; BM = the largest that divides v).
#include <cuda_runtime.h>

#include <atomic>
#include <stdexcept>
#include <string>

#include "hinm/cuda_layout.hpp"
#include "hinm/cuda_spmm.hpp"
#include "hinm_kernel.cuh"

namespace hinm {

namespace {

void check_cuda(cudaError_t err, const char* what) {
  if (err != cudaSuccess) throw std::runtime_error(std::string("cuda_hinm_spmm: ") + what + ": " + cudaGetErrorString(err));
}

void check_args(const HiNMDeviceView& w, const void* x, int64_t n, int64_t ldx, const void* y, int64_t ldy) {
  auto bad = [](const std::string& m) { throw std::invalid_argument("cuda_hinm_spmm: " + m); };
  if (w.dtype != DType::f16 && w.dtype != DType::bf16)
    bad(std::string("dtype must be float16 or bfloat16, got ") + dtype_name(w.dtype));
  if (w.rows < 0 || w.cols < 0 || w.v < 1 || n < 0) bad("negative extent or v < 1");
  if (w.kept < 0 || w.kept % 4 != 0 || w.kept > w.cols) bad("kept=" + std::to_string(w.kept) + " must be a multiple of 4 and <= K");
  if (!w.col_idx && w.kept != w.cols) bad("without col_idx, kept must equal K");
  if (w.col_idx && w.tiles() > 1 && cuda_tile::block_rows(w.v, true) == 0)
    bad("v=" + std::to_string(w.v) + " is not a multiple of 32 (the CUDA kernel's smallest block height)");
  if (ldx % 8 != 0 || ldx < (n + 7) / 8 * 8)
    bad("x row stride " + std::to_string(ldx) + " must be a multiple of 8 and >= roundup(n, 8)");
  if (reinterpret_cast<uintptr_t>(x) % 16 != 0) bad("x must be 16-byte aligned");
  if (ldy < n) bad("y row stride " + std::to_string(ldy) + " < n=" + std::to_string(n));
  if (w.rows > 0 && n > 0 && w.kept > 0 && (!w.frag_values || !w.lane_words || !x || !y)) bad("null pointer");
  if (reinterpret_cast<uintptr_t>(w.frag_values) % 16 != 0 || reinterpret_cast<uintptr_t>(w.lane_words) % 16 != 0)
    bad("frag_values and lane_words must be 16-byte aligned");
}

// Streaming multiprocessors of the current device (cached per device).
int sm_count() {
  static std::atomic<int> cached[64] = {};
  int device = 0;
  check_cuda(cudaGetDevice(&device), "cudaGetDevice");
  if (device < 64 && cached[device].load(std::memory_order_relaxed) > 0) return cached[device].load();
  int sms = 0;
  check_cuda(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device), "cudaDeviceGetAttribute");
  if (device < 64) cached[device].store(sms);
  return sms;
}

template <class T, int BM>
void launch(const cuda_kernel::SpmmParams& p, int64_t slots, cudaStream_t stream) {
  using G = cuda_tile::Tile<BM>;
  auto kernel = cuda_kernel::hinm_spmm_kernel<T, BM>;
  // The shared-memory opt-in is per device: set it once per (instantiation, device).
  static std::atomic<uint64_t> opted_in{0};
  int device = 0;
  check_cuda(cudaGetDevice(&device), "cudaGetDevice");
  const uint64_t bit = device < 64 ? uint64_t(1) << device : 0;
  if (!bit || !(opted_in.load(std::memory_order_acquire) & bit)) {
    check_cuda(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, G::SMEM_BYTES),
               "cudaFuncSetAttribute");
    opted_in.fetch_or(bit, std::memory_order_acq_rel);
  }
  const dim3 grid(unsigned((p.n + cuda_tile::BN - 1) / cuda_tile::BN), unsigned((slots + BM - 1) / BM));
  if (grid.y > 65535u) throw std::invalid_argument("cuda_hinm_spmm: too many rows for one launch");
  kernel<<<grid, G::THREADS, G::SMEM_BYTES, stream>>>(p);
  check_cuda(cudaGetLastError(), "kernel launch");
}

template <class T>
void launch_bm(const cuda_kernel::SpmmParams& p, int bm, int64_t slots, cudaStream_t stream) {
  switch (bm) {
    case 128: return launch<T, 128>(p, slots, stream);
    case 64: return launch<T, 64>(p, slots, stream);
    default: return launch<T, 32>(p, slots, stream);
  }
}

}  // namespace

void cuda_hinm_spmm(const HiNMDeviceView& w, const void* x, int64_t n, int64_t ldx, void* y, int64_t ldy,
                    const void* bias, bool accumulate, void* stream) {
  check_args(w, x, n, ldx, y, ldy);
  if (w.rows == 0 || n == 0) return;
  cuda_kernel::SpmmParams p{};
  p.frag_values = static_cast<const uint8_t*>(w.frag_values);
  p.lane_words = reinterpret_cast<const uint8_t*>(w.lane_words);
  p.col_idx = w.col_idx;
  p.row_perm = w.row_perm;
  p.x = static_cast<const uint8_t*>(x);
  p.y = y;
  p.bias = bias;
  p.accumulate = accumulate;
  p.rows = w.rows;
  p.kept = w.kept;
  p.kslices = cuda_layout::kslices(w.kept);
  p.n = n;
  p.ldx = ldx;
  p.ldy = ldy;
  p.v = w.col_idx ? w.v : int(cuda_layout::kSlotAlign);  // without col_idx the tile is irrelevant
  const int64_t slots = w.col_idx ? w.slots() : w.rows;
  // One tile (e.g. plain N:M with a column permutation): every block reads col_idx row 0, any BM fits.
  const bool per_tile_cols = w.col_idx != nullptr && w.tiles() > 1;
  const int bm = cuda_tile::launch_block_rows(cuda_tile::block_rows(w.v, per_tile_cols), slots, n, sm_count());
  auto s = static_cast<cudaStream_t>(stream);
  if (w.dtype == DType::f16)
    launch_bm<__half>(p, bm, slots, s);
  else
    launch_bm<__nv_bfloat16>(p, bm, slots, s);
}

}  // namespace hinm
