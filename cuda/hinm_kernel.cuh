// The HiNM SpMM kernel: cp.async multistage pipeline (gathered B rows, fragment-ordered A, lane
// words), ldmatrix.trans for B, mma.sp::ordered_metadata m16n8k32 with f32 accumulation, and an
// epilogue that writes each slot row straight to its original row. Geometry in hinm_tile.hpp.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cstdint>

#include "hinm_tile.hpp"

namespace hinm {
namespace cuda_kernel {

struct SpmmParams {
  const uint8_t* frag_values;    // bytes
  const uint8_t* lane_words;     // bytes
  const int32_t* col_idx;        // [T, Kt] or null
  const int64_t* row_perm;       // [R] or null
  const uint8_t* x;              // bytes, [K, ldx]
  void* y;                       // [R, ldy]
  const void* bias;              // [R] or null
  int64_t rows, kept, kslices, n, ldx, ldy;
  int v;
  bool accumulate;               // y += W x (+ bias) instead of y = ...
};

__device__ __forceinline__ void cp_async16(uint32_t smem_addr, const void* gmem, bool valid) {
  const int src_bytes = valid ? 16 : 0;  // 0: no read, zero fill
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr), "l"(gmem), "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], uint32_t smem_addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr));
}

template <class T>
struct Mma;

#define HINM_MMA_SP(TYPE)                                                                                         \
  template <int SEL>                                                                                              \
  __device__ __forceinline__ static void run(float (&d)[4], const uint4& a, const uint32_t (&b)[4], uint32_t e) { \
    asm volatile("mma.sp::ordered_metadata.sync.aligned.m16n8k32.row.col.f32." TYPE "." TYPE                     \
                 ".f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9, %10, %11}, {%0, %1, %2, %3}, %12, %13;\n"     \
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])                                                 \
                 : "r"(a.x), "r"(a.y), "r"(a.z), "r"(a.w), "r"(b[0]), "r"(b[1]), "r"(b[2]), "r"(b[3]), "r"(e),   \
                   "n"(SEL));                                                                                     \
  }

template <>
struct Mma<__half> {
  HINM_MMA_SP("f16")
  __device__ __forceinline__ static uint32_t pack(float a, float b) {
    __half2 h = __floats2half2_rn(a, b);
    return *reinterpret_cast<uint32_t*>(&h);
  }
  __device__ __forceinline__ static __half from_float(float a) { return __float2half_rn(a); }
  __device__ __forceinline__ static float to_float(__half a) { return __half2float(a); }
};
template <>
struct Mma<__nv_bfloat16> {
  HINM_MMA_SP("bf16")
  __device__ __forceinline__ static uint32_t pack(float a, float b) {
    __nv_bfloat162 h = __floats2bfloat162_rn(a, b);
    return *reinterpret_cast<uint32_t*>(&h);
  }
  __device__ __forceinline__ static __nv_bfloat16 from_float(float a) { return __float2bfloat16_rn(a); }
  __device__ __forceinline__ static float to_float(__nv_bfloat16 a) { return __bfloat162float(a); }
};
#undef HINM_MMA_SP

// Issues the cp.async copies of stage `kt` into the shared-memory stage at `stage_addr`.
template <int BM>
__device__ __forceinline__ void load_stage(const SpmmParams& p, uint32_t stage_addr, int64_t slot0,
                                           const int32_t* tile_cols, int64_t n0, int64_t kt) {
  using G = cuda_tile::Tile<BM>;
  const int tid = threadIdx.x;
  static_assert(G::A_CHUNKS % G::THREADS == 0 && G::B_CHUNKS % G::THREADS == 0, "whole chunks per thread");
#pragma unroll
  for (int it = 0; it < G::A_CHUNKS / G::THREADS; ++it) {
    const int i = tid + it * G::THREADS;
    const cuda_tile::Chunk c = cuda_tile::a_chunk<BM>(i, slot0, p.kslices, kt);
    cp_async16(stage_addr + c.dst, p.frag_values + c.src, true);
  }
  if (tid < G::META_CHUNKS) {  // fewer chunks than threads
    const cuda_tile::Chunk c = cuda_tile::meta_chunk<BM>(tid, slot0, p.kslices, kt);
    cp_async16(stage_addr + c.dst, p.lane_words + c.src, true);
  }
#pragma unroll
  for (int it = 0; it < G::B_CHUNKS / G::THREADS; ++it) {
    const int i = tid + it * G::THREADS;
    const cuda_tile::Chunk c = cuda_tile::b_chunk<BM>(i, tile_cols, p.kept, kt, n0, p.n, p.ldx);
    cp_async16(stage_addr + c.dst, p.x + c.src, c.valid);
  }
}

template <class T, int BM>
__global__ void __launch_bounds__(cuda_tile::Tile<BM>::THREADS, cuda_tile::Tile<BM>::MIN_BLOCKS) hinm_spmm_kernel(const SpmmParams p) {
  using G = cuda_tile::Tile<BM>;
  static_assert(G::META_CHUNKS <= G::THREADS, "one lane-word chunk per thread at most");
  extern __shared__ __align__(128) uint8_t smem[];
  const uint32_t smem_base = static_cast<uint32_t>(__cvta_generic_to_shared(smem));

  const int64_t n0 = int64_t(blockIdx.x) * cuda_tile::BN;
  const int64_t slot0 = int64_t(blockIdx.y) * BM;
  const int32_t* tile_cols = p.col_idx ? p.col_idx + (slot0 / p.v) * p.kept : nullptr;
  const int64_t ktiles = p.kslices / cuda_tile::KSTEPS;

  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int wm = warp / cuda_tile::WARPS_N, wn = warp % cuda_tile::WARPS_N;

  constexpr int MT = G::MT;
  float acc[MT][cuda_tile::N8][4];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int nt = 0; nt < cuda_tile::N8; ++nt)
#pragma unroll
      for (int r = 0; r < 4; ++r) acc[mt][nt][r] = 0.f;

#pragma unroll
  for (int s = 0; s < cuda_tile::STAGES - 1; ++s) {
    if (s < ktiles) load_stage<BM>(p, smem_base + s * G::STAGE_BYTES, slot0, tile_cols, n0, s);
    cp_async_commit();
  }

  for (int64_t kt = 0; kt < ktiles; ++kt) {
    cp_async_wait<cuda_tile::STAGES - 2>();
    __syncthreads();  // stage kt has landed for every thread; stage kt-1 is no longer read
    const int64_t next = kt + cuda_tile::STAGES - 1;
    if (next < ktiles)
      load_stage<BM>(p, smem_base + int(next % cuda_tile::STAGES) * G::STAGE_BYTES, slot0, tile_cols, n0, next);
    cp_async_commit();

    const int stage = int(kt % cuda_tile::STAGES);
    const uint8_t* st = smem + stage * G::STAGE_BYTES;
    const uint32_t st_addr = smem_base + stage * G::STAGE_BYTES;
    const uint4* a_s = reinterpret_cast<const uint4*>(st);
    const uint32_t* meta_s = reinterpret_cast<const uint32_t*>(st + G::A_BYTES);
    const uint32_t b_addr = st_addr + G::A_BYTES + G::META_BYTES;
#pragma unroll
    for (int ks = 0; ks < cuda_tile::KSTEPS; ++ks) {
      uint32_t e[MT / 2];
      uint4 a[MT];
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        const int mtile = wm * MT + mt;
        if (mt % 2 == 0) e[mt / 2] = meta_s[cuda_tile::meta_word(mtile, ks, lane)];
        a[mt] = a_s[cuda_tile::a_frag_chunk(mtile, ks, lane)];
      }
#pragma unroll
      for (int nt = 0; nt < cuda_tile::N8; ++nt) {
        uint32_t b[4];
        ldmatrix_x4_trans(b, b_addr + 2 * cuda_tile::b_ldmatrix_elem(wn, nt, ks, lane));
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {  // the selector is an immediate: (wm * MT + mt) % 2 == mt % 2
          if (cuda_tile::selector(wm * MT + mt) == 0)
            Mma<T>::template run<0>(acc[mt][nt], a[mt], b, e[mt / 2]);
          else
            Mma<T>::template run<1>(acc[mt][nt], a[mt], b, e[mt / 2]);
        }
      }
    }
  }
  cp_async_wait<0>();
  __syncthreads();  // every warp is done with the pipeline's shared memory

  // Epilogue 1: accumulators -> shared memory (f32 tile [BM][C_PITCH]).
  float* c_s = reinterpret_cast<float*>(smem);
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int nt = 0; nt < cuda_tile::N8; ++nt)
#pragma unroll
      for (int half = 0; half < 2; ++half)
        *reinterpret_cast<float2*>(c_s + cuda_tile::c_stage_index(wm * MT + mt, wn, nt, lane, 2 * half)) =
            make_float2(acc[mt][nt][2 * half], acc[mt][nt][2 * half + 1]);
  __syncthreads();

  // Epilogue 2: 8 outputs per thread and step; slot row s -> original row row_perm[s], padding
  // slots (s >= R) and columns >= n dropped; bias and (accumulate) the old value added in f32.
  T* y = static_cast<T*>(p.y);
  const T* bias = static_cast<const T*>(p.bias);
  const bool vec = (p.ldy % 8 == 0) && (reinterpret_cast<uintptr_t>(p.y) % 16 == 0);
  for (int i = threadIdx.x; i < BM * cuda_tile::C_CHUNKS_PER_ROW; i += G::THREADS) {
    const int r = cuda_tile::c_chunk_row(i), c = cuda_tile::c_chunk_col(i);
    const int64_t s = slot0 + r, col = n0 + c;
    if (s >= p.rows || col >= p.n) continue;
    const int64_t row = p.row_perm ? p.row_perm[s] : s;
    const float b = bias ? Mma<T>::to_float(bias[row]) : 0.f;
    T* out = y + row * p.ldy + col;
    const float4 lo = *reinterpret_cast<const float4*>(c_s + r * cuda_tile::C_PITCH + c);
    const float4 hi = *reinterpret_cast<const float4*>(c_s + r * cuda_tile::C_PITCH + c + 4);
    float v[8] = {lo.x + b, lo.y + b, lo.z + b, lo.w + b, hi.x + b, hi.y + b, hi.z + b, hi.w + b};
    if (vec && col + 8 <= p.n) {
      uint4 packed;
      if (p.accumulate) {
        packed = *reinterpret_cast<const uint4*>(out);
        const T* old = reinterpret_cast<const T*>(&packed);
#pragma unroll
        for (int e = 0; e < 8; ++e) v[e] += Mma<T>::to_float(old[e]);
      }
      packed = make_uint4(Mma<T>::pack(v[0], v[1]), Mma<T>::pack(v[2], v[3]), Mma<T>::pack(v[4], v[5]),
                          Mma<T>::pack(v[6], v[7]));
      *reinterpret_cast<uint4*>(out) = packed;
    } else {
#pragma unroll
      for (int e = 0; e < 8; ++e)
        if (col + e < p.n) out[e] = Mma<T>::from_float(v[e] + (p.accumulate ? Mma<T>::to_float(out[e]) : 0.f));
    }
  }
}

}  // namespace cuda_kernel
}  // namespace hinm
