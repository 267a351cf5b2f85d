// AVX-512 panel path ("many activations"): the kernel reads the in-group positions straight from
// the weight (no per-call offsets table) and the panel gather copies whole lane vectors. Compiled
// with a target attribute; the driver (spmm.cpp) calls it only where the CPU has avx512f/bw/vl.
//
// Why this shape (measured on Zen 4, see the report of the spmm-big branch): vectorising over
// batch lanes lets the activation "gather" of each kept value fold into the address of a plain
// vector load, so one FMA costs one load. Vectorising over output rows instead needs a permute per
// FMA, which on Zen 4 competes with the FMAs and ran at ~0.7x of this kernel.
#include "spmm_kernels.hpp"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>

#define HINM_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma,popcnt,f16c")))

namespace hinm::detail {
namespace {

// One panel column of L batch lanes: W vectors of S::width floats.
struct Zmm {
  using V = __m512;
  static constexpr int width = 16;
  HINM_AVX512 static V zero() { return _mm512_setzero_ps(); }
  HINM_AVX512 static V load(const float* p) { return _mm512_loadu_ps(p); }
  HINM_AVX512 static void store(float* p, V v) { _mm512_storeu_ps(p, v); }
  HINM_AVX512 static V bcast(const float* p) { return _mm512_set1_ps(*p); }
  HINM_AVX512 static V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
};
struct Ymm {  // 8 lanes: half the register, the same FLOPs per cycle on Zen 4 (two 256-bit pipes)
  using V = __m256;
  static constexpr int width = 8;
  HINM_AVX512 static V zero() { return _mm256_setzero_ps(); }
  HINM_AVX512 static V load(const float* p) { return _mm256_loadu_ps(p); }
  HINM_AVX512 static void store(float* p, V v) { _mm256_storeu_ps(p, v); }
  HINM_AVX512 static V bcast(const float* p) { return _mm256_broadcast_ss(p); }
  HINM_AVX512 static V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
};

// min(pos, top) without a branch: positions are data, a compare-and-jump mispredicts on about one
// value in six (2:4) and halved the kernel's speed. M a power of two: a mask does it.
template <int M>
inline unsigned clamp_pos(unsigned pos, unsigned top) {
  if constexpr (M > 0 && (M & (M - 1)) == 0) return pos & unsigned(M - 1);
  return pos ^ ((pos ^ top) & (0u - unsigned(pos > top)));
}

// block() for 2:4 with 2-bit position words (PanelArgs::words, the rows pack's): the same FMAs in
// the same order, so the same bits. Value 16q+e of row i at v[i] + q * vals_step + e.
template <class S, int W, int RB>
HINM_AVX512 void block_words(const PanelArgs& a, int64_t r, typename S::V (&c)[RB][W], float* const (&y)[RB],
                             const float* const (&v)[RB]) {
  constexpr int L = S::width * W;
  const uint8_t* wd[RB];
  const float* vq[RB];
#pragma GCC unroll 8
  for (int i = 0; i < RB; ++i) {
    wd[i] = a.words + (r + i) * a.word_stride * 4;
    vq[i] = v[i];
  }
  const float* group = a.panel;
  for (int64_t q = 0; q < a.cnt / 16; ++q, group += 8 * 4 * L) {
    uint32_t word[RB];
#pragma GCC unroll 8
    for (int i = 0; i < RB; ++i) std::memcpy(&word[i], wd[i] + q * a.word_step * 4, 4);  // any alignment
#pragma GCC unroll 16
    for (int e = 0; e < 16; ++e) {
      const float* g = group + (e / 2) * 4 * L;
#pragma GCC unroll 8
      for (int i = 0; i < RB; ++i) {
        const typename S::V wv = S::bcast(vq[i] + e);
        const float* col = g + ((word[i] >> (2 * e)) & 3u) * L;
#pragma GCC unroll 4
        for (int w = 0; w < W; ++w) c[i][w] = S::fma(wv, S::load(col + S::width * w), c[i][w]);
      }
    }
#pragma GCC unroll 8
    for (int i = 0; i < RB; ++i) vq[i] += a.vals_step;
  }
#pragma GCC unroll 8
  for (int i = 0; i < RB; ++i)
#pragma GCC unroll 4
    for (int w = 0; w < W; ++w) S::store(y[i] + S::width * w, c[i][w]);
}

// RB rows x L lanes of accumulators in registers; value j of row i multiplies panel column
// (j / n) * m + min(position, m - 1) (clamped: memory safety on unchecked positions; for m a power of two
// an out-of-range position wraps instead, as safe and as meaningless).
// N, M > 0: the pattern as constants (the common 2:4 unrolls fully); 0: read from the arguments.
template <class S, int W, int RB, int N, int M>
HINM_AVX512 void block(const PanelArgs& a, int64_t r) {
  constexpr int L = S::width * W;
  typename S::V c[RB][W];
  float* y[RB];
  const float* v[RB];
  const uint8_t* p[RB];
#pragma GCC unroll 8
  for (int i = 0; i < RB; ++i) {
    y[i] = a.acc + (r + i) * a.acc_stride;
    v[i] = a.vals + (r + i) * a.vals_stride;
    p[i] = a.pos + (r + i) * a.pos_stride;
#pragma GCC unroll 4
    for (int w = 0; w < W; ++w) c[i][w] = a.first ? S::zero() : S::load(y[i] + S::width * w);
  }
  const int n = N > 0 ? N : a.n, m = M > 0 ? M : a.m;
  const unsigned top = unsigned(m - 1);
  const float* group = a.panel;
  if constexpr (N == 2 && M == 4) {
    if (a.words) return block_words<S, W, RB>(a, r, c, y, v);
  }
  for (int64_t j = 0; j < a.cnt; j += n, group += int64_t(m) * L) {
#pragma GCC unroll 4
    for (int q = 0; q < n; ++q) {
#pragma GCC unroll 8
      for (int i = 0; i < RB; ++i) {
        const typename S::V wv = S::bcast(v[i] + j + q);
        const float* col = group + clamp_pos<M>(p[i][j + q], top) * L;
#pragma GCC unroll 4
        for (int w = 0; w < W; ++w) c[i][w] = S::fma(wv, S::load(col + S::width * w), c[i][w]);
      }
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < RB; ++i)
#pragma GCC unroll 4
    for (int w = 0; w < W; ++w) S::store(y[i] + S::width * w, c[i][w]);
}

// All rows from r on: blocks of RB, then halving blocks for the rest (a lone row is latency-bound).
template <class S, int W, int RB, int N, int M>
HINM_AVX512 void rows_from(const PanelArgs& a, int64_t r) {
  for (; r + RB <= a.rows; r += RB) block<S, W, RB, N, M>(a, r);
  if constexpr (RB > 1) rows_from<S, W, RB / 2, N, M>(a, r);
}

// Enough independent accumulators to cover the FMA latency, few enough to stay in registers.
template <class S, int W, int N, int M>
HINM_AVX512 void lanes(const PanelArgs& a) {
  constexpr int RB = W == 1 ? 8 : W == 2 ? 4 : W == 3 ? 3 : 2;
  rows_from<S, W, RB, N, M>(a, 0);
}

template <int N, int M>
HINM_AVX512 void pattern(const PanelArgs& a) {
  switch (a.nb) {
    case 8: return lanes<Ymm, 1, N, M>(a);
    case 16: return lanes<Zmm, 1, N, M>(a);
    case 24: return lanes<Ymm, 3, N, M>(a);
    case 32: return lanes<Zmm, 2, N, M>(a);
    case 48: return lanes<Zmm, 3, N, M>(a);
    case 64: return lanes<Zmm, 4, N, M>(a);
  }
  throw std::logic_error("spmm avx512 panel: unsupported lane count");
}

HINM_AVX512 void panel_pos(const PanelArgs& a) {
  if (a.n == 2 && a.m == 4) return pattern<2, 4>(a);
  return pattern<0, 0>(a);
}

// dst column c (nb floats) = src row (cols ? cols[c] : c), lanes >= valid zero.
HINM_AVX512 void gather(const GatherArgs& g) {
  const int nb = g.nb;
  if (nb % 16) {  // 8 or 24 lanes: 256-bit pieces
    const int vecs = nb / 8;
    __mmask8 masks[3];
    for (int w = 0; w < vecs; ++w) {
      const int left = g.valid - 8 * w;
      masks[w] = left >= 8 ? __mmask8(0xff) : left <= 0 ? __mmask8(0) : __mmask8((1u << left) - 1u);
    }
    for (int64_t c = 0; c < g.count; ++c) {
      const float* s = g.src + (g.cols ? int64_t(g.cols[c]) : c) * g.src_stride;
      float* d = g.dst + c * nb;
      for (int w = 0; w < vecs; ++w) _mm256_storeu_ps(d + 8 * w, _mm256_maskz_loadu_ps(masks[w], s + 8 * w));
    }
    return;
  }
  const int vecs = nb / 16;
  __mmask16 masks[4];
  for (int w = 0; w < vecs; ++w) {
    const int left = g.valid - 16 * w;
    masks[w] = left >= 16 ? __mmask16(0xffff) : left <= 0 ? __mmask16(0) : __mmask16((1u << left) - 1u);
  }
  for (int64_t c = 0; c < g.count; ++c) {
    const float* s = g.src + (g.cols ? int64_t(g.cols[c]) : c) * g.src_stride;
    float* d = g.dst + c * nb;
    for (int w = 0; w < vecs; ++w) _mm512_storeu_ps(d + 16 * w, _mm512_maskz_loadu_ps(masks[w], s + 16 * w));
  }
}

// 8 x 8 block transpose in registers (the scalar strided copy was 20-40% of small-R calls).
HINM_AVX512 inline void transpose8(__m256 r[8]) {
  __m256 t[8], u[8];
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int h = 0; h < 8; h += 4) {
    u[h] = _mm256_shuffle_ps(t[h], t[h + 2], 0x44);
    u[h + 1] = _mm256_shuffle_ps(t[h], t[h + 2], 0xEE);
    u[h + 2] = _mm256_shuffle_ps(t[h + 1], t[h + 3], 0x44);
    u[h + 3] = _mm256_shuffle_ps(t[h + 1], t[h + 3], 0xEE);
  }
  for (int i = 0; i < 4; ++i) {
    r[i] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x20);
    r[i + 4] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x31);
  }
}

// dst[c * nb + l] = src[l * src_stride + c] for c < cols, l < rows; lanes rows..nb-1 zero.
// Sixteen source rows at a time across all columns (nb a multiple of 16): each pass writes whole
// 64-byte lines of dst and reads 16 row streams. Taking 8 columns of all nb rows at a time read nb
// streams at once (64 past batch 48, more than the hardware prefetchers follow): this order made
// calls 1.01-1.17x faster for 768x3072 at batch 128-1952 (float32 2:4, Intel Xeon, 1 and 2
// threads), 1.00-1.04x on the other BERT-base shapes. 8 and 24 lanes: all rows per pass (a dst
// row is 32 or 96 bytes).
HINM_AVX512 void transpose(const TransposeArgs& t) {
  const int rows_per_pass = t.nb % 16 == 0 ? 16 : t.nb;
  for (int l0 = 0; l0 < t.nb; l0 += rows_per_pass)
    for (int64_t c0 = 0; c0 < t.cols; c0 += 8) {
      const int64_t left = t.cols - c0;
      const int cw = left >= 8 ? 8 : int(left);
      const __mmask8 cmask = __mmask8((1u << cw) - 1u);
      for (int h = l0; h < l0 + rows_per_pass; h += 8) {
        __m256 r[8];
        for (int i = 0; i < 8; ++i)
          r[i] = h + i < t.rows ? _mm256_maskz_loadu_ps(cmask, t.src + int64_t(h + i) * t.src_stride + c0)
                                : _mm256_setzero_ps();
        transpose8(r);
        for (int c = 0; c < cw; ++c) _mm256_storeu_ps(t.dst + (c0 + c) * t.nb + h, r[c]);
      }
    }
}

// out[b * out_b + i] (= or +=) acc[i * acc_stride + b] + bias[i], through 8 x 8 transposes (the
// scalar column-wise copy was ~5% of a call). Same operation order as the scalar store. Sixteen
// rows of acc per pass, so each output row gets a whole 64-byte line at once (eight rows wrote
// half lines: 1.00-1.03x slower calls, float32 2:4, batch 128-1952, 2 threads).
HINM_AVX512 void store_rows(const StoreArgs& t) {
  for (int64_t i0 = 0; i0 < t.rows; i0 += 16)
    for (int64_t b0 = 0; b0 < t.batch; b0 += 8) {
      const int bw = t.batch - b0 >= 8 ? 8 : int(t.batch - b0);
      const __mmask8 bmask = __mmask8((1u << bw) - 1u);
      for (int64_t h = i0; h < std::min(i0 + 16, t.rows); h += 8) {
        const int iw = t.rows - h >= 8 ? 8 : int(t.rows - h);
        const __mmask8 imask = __mmask8((1u << iw) - 1u);
        const __m256 bias = t.bias ? _mm256_maskz_loadu_ps(imask, t.bias + h) : _mm256_setzero_ps();
        __m256 r[8];
        for (int q = 0; q < 8; ++q)
          r[q] = q < iw ? _mm256_maskz_loadu_ps(bmask, t.acc + (h + q) * t.acc_stride + b0) : _mm256_setzero_ps();
        transpose8(r);
        for (int c = 0; c < bw; ++c) {
          float* dst = t.out + (b0 + c) * t.out_b + h;
          __m256 v = t.bias ? _mm256_add_ps(r[c], bias) : r[c];
          if (t.accumulate) v = _mm256_add_ps(_mm256_maskz_loadu_ps(imask, dst), v);
          _mm256_mask_storeu_ps(dst, imask, v);
        }
      }
    }
}

}  // namespace

const PanelPosKernels* panel_pos_avx512() {
  static const PanelPosKernels k{panel_pos, gather, transpose, store_rows};
  return &k;
}

}  // namespace hinm::detail

#else
namespace hinm::detail {
const PanelPosKernels* panel_pos_avx512() { return nullptr; }
}  // namespace hinm::detail
#endif
