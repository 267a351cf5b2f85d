// AVX-512 kernels (compiled with a target attribute; called only where the CPU has
// avx512f/bw/vl, see spmm.cpp).
#include "spmm_kernels.hpp"

#include <cstring>
#include <stdexcept>
#include <type_traits>

#include "hinm/dispatch.hpp"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
// GCC 12's own intrinsic headers trip these (reduce_add, cast256 helpers).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#define HINM_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma,popcnt,f16c")))

namespace hinm::detail {
namespace {

// --- value loads: `cnt` (<= 16) consecutive values as float32 lanes 0..cnt-1 ---------------
HINM_AVX512 inline __m512 load_f32(const float* p, unsigned cnt) {
  return _mm512_maskz_loadu_ps(__mmask16((1u << cnt) - 1u), p);
}
HINM_AVX512 inline __m512 load_f16(const uint16_t* p, unsigned cnt) {
  return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(__mmask16((1u << cnt) - 1u), p));
}
HINM_AVX512 inline __m512 load_bf16(const uint16_t* p, unsigned cnt) {
  const __m256i h = _mm256_maskz_loadu_epi16(__mmask16((1u << cnt) - 1u), p);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
HINM_AVX512 inline __m512 load_i8(const int8_t* p, unsigned cnt) {
  const __m128i b = _mm_maskz_loadu_epi8(__mmask16((1u << cnt) - 1u), p);
  return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(b));
}
template <class T>
HINM_AVX512 inline __m512 load_vals(const T* p, unsigned cnt) {
  if constexpr (std::is_same_v<T, float>) return load_f32(p, cnt);
  else if constexpr (std::is_same_v<T, int8_t>) return load_i8(p, cnt);
  else return load_f16(p, cnt);
}
HINM_AVX512 inline __m512 load_vals_bf16(const uint16_t* p, unsigned cnt) { return load_bf16(p, cnt); }

// 16 whole values, no mask (the main loops; the tails use the masked loads above).
template <class T, bool BF16>
HINM_AVX512 inline __m512 load16(const T* p) {
  if constexpr (std::is_same_v<T, float>) {
    return _mm512_loadu_ps(p);
  } else if constexpr (std::is_same_v<T, int8_t>) {
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
  } else if constexpr (BF16) {
    const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  } else {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  }
}
template <class T, bool BF16>
HINM_AVX512 inline __m512 load_n(const T* p, unsigned cnt) {
  if constexpr (BF16) return load_vals_bf16(reinterpret_cast<const uint16_t*>(p), cnt);
  else return load_vals(p, cnt);
}

// --- horizontal sums: four vectors -> their four totals (lanes 0..3), one shuffle tree instead
// of four separate reductions (the rows kernels end every row with one).
HINM_AVX512 inline __m128 reduce4(__m512 a0, __m512 a1, __m512 a2, __m512 a3) {
  // 512 -> 256: [a0 lo+hi | a1 lo+hi], [a2 .. | a3 ..]
  const __m512 s01 = _mm512_add_ps(_mm512_shuffle_f32x4(a0, a1, _MM_SHUFFLE(1, 0, 1, 0)),
                                   _mm512_shuffle_f32x4(a0, a1, _MM_SHUFFLE(3, 2, 3, 2)));
  const __m512 s23 = _mm512_add_ps(_mm512_shuffle_f32x4(a2, a3, _MM_SHUFFLE(1, 0, 1, 0)),
                                   _mm512_shuffle_f32x4(a2, a3, _MM_SHUFFLE(3, 2, 3, 2)));
  // 256 -> 128: quad q holds row q's four partial sums
  __m512 t = _mm512_add_ps(_mm512_shuffle_f32x4(s01, s23, _MM_SHUFFLE(2, 0, 2, 0)),
                           _mm512_shuffle_f32x4(s01, s23, _MM_SHUFFLE(3, 1, 3, 1)));
  t = _mm512_add_ps(t, _mm512_permute_ps(t, _MM_SHUFFLE(1, 0, 3, 2)));
  t = _mm512_add_ps(t, _mm512_permute_ps(t, _MM_SHUFFLE(2, 3, 0, 1)));
  return _mm512_castps512_ps128(_mm512_permutexvar_ps(_mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0), t));
}

// out[(r0 + i) * 4 + b] = total of acc[i][b]. Groups of four vectors share one tree; the order of
// additions inside a row's total is the same whatever the group.
template <int RB, int B>
HINM_AVX512 inline void store_totals(__m512 (&acc)[RB][B], float* out, int64_t r0) {
  constexpr int N = RB * B;
  const __m512 zero = _mm512_setzero_ps();
#pragma GCC unroll 16
  for (int g = 0; g < N; g += 4) {
    __m512 v[4];
#pragma GCC unroll 4
    for (int q = 0; q < 4; ++q) v[q] = g + q < N ? acc[(g + q) / B][(g + q) % B] : zero;
    alignas(16) float tot[4];
    _mm_store_ps(tot, reduce4(v[0], v[1], v[2], v[3]));
#pragma GCC unroll 4
    for (int q = 0; q < 4; ++q)
      if (g + q < N) out[(r0 + (g + q) / B) * 4 + (g + q) % B] = tot[q];
  }
}

// --- rows kernel: RB rows x B activations; weights decoded by mask expansion ------------------
template <class T, bool BF16, int RB, int B>
HINM_AVX512 void rows_rb(const RowsArgs& a, int64_t r0) {
  __m512 acc[RB][B];
  for (int i = 0; i < RB; ++i)
    for (int b = 0; b < B; ++b) acc[i][b] = _mm512_setzero_ps();
  const T* vp[RB];
  const uint16_t* mp[RB];
  for (int i = 0; i < RB; ++i) {
    vp[i] = static_cast<const T*>(a.vals) + (r0 + i) * a.vals_stride;
    mp[i] = a.masks + (r0 + i) * a.mask_stride;
  }
  const int64_t whole = a.kept / 16;  // blocks of 16 kept columns: unmasked activation loads
  for (int64_t blk = 0; blk < a.blocks; ++blk) {
    __m512 xv[B];
    if (blk < whole) {
      for (int b = 0; b < B; ++b) xv[b] = _mm512_loadu_ps(a.x[b] + blk * 16);
    } else {
      const __mmask16 valid = __mmask16((1u << (a.kept - blk * 16)) - 1u);
      for (int b = 0; b < B; ++b) xv[b] = _mm512_maskz_loadu_ps(valid, a.x[b] + blk * 16);
    }
    for (int i = 0; i < RB; ++i) {
      const unsigned m = mp[i][blk];
      const unsigned cnt = unsigned(__builtin_popcount(m));
      const __m512 raw = load_n<T, BF16>(vp[i], cnt);
      vp[i] += cnt;
      const __m512 wv = _mm512_maskz_expand_ps(__mmask16(m), raw);
      for (int b = 0; b < B; ++b) acc[i][b] = _mm512_fmadd_ps(wv, xv[b], acc[i][b]);
    }
  }
  store_totals<RB, B>(acc, a.out, r0);
}

// m == 2n: 16 values cover 32 kept columns; their activations come from two registers by a
// permute indexed by (value / n) * m + position. The main loop runs over whole steps of 16
// values without masks; the last partial step (cnt % 16 values) is masked. PACKED: the whole
// steps come from the rows pack (a.pvals / a.ppos, rows r0.. inside one block of 8 slots), one
// stream for all RB rows instead of one per row; the partial step from the weight's own arrays.
// POS2: the positions of whole steps are 2-bit fields (m <= 4), a step's 16 in one uint32: the
// pack's when PACKED, else the rows' position words (a.pos_words).
template <class T, bool BF16, int RB, int B, bool PF, bool PACKED = false, bool POS2 = false>
HINM_AVX512 void rows_perm_rb(const RowsArgs& a, int64_t r0, __m512i base) {
  __m512 acc[RB][B];
#pragma GCC unroll 16
  for (int i = 0; i < RB; ++i)
#pragma GCC unroll 4
    for (int b = 0; b < B; ++b) acc[i][b] = _mm512_setzero_ps();
  const T* vp[RB];
  const uint8_t* pp[RB] = {};
  const uint8_t* wp[RB] = {};  // POS2: the rows' position words, 4 bytes a step (value q: wp[i] + q / 4)
  // Elements from one step of 16 values of a row to the next: 16 along a row, or a whole block
  // (kPackRows rows x 16) in the pack.
  constexpr int64_t step = PACKED ? kPackRows * 16 : 16;
  if constexpr (PACKED) {
    const int64_t slot = a.slot0 + r0;
    const int64_t at = (slot / kPackRows) * (a.cnt / 16) * kPackRows * 16 + (slot % kPackRows) * 16;
#pragma GCC unroll 16
    for (int i = 0; i < RB; ++i) {
      vp[i] = static_cast<const T*>(a.pvals) + at + i * 16;
      if constexpr (POS2) wp[i] = a.ppos + (at + i * 16) / 4;
      else pp[i] = a.ppos + at + i * 16;
    }
  } else {
#pragma GCC unroll 16
    for (int i = 0; i < RB; ++i) {
      vp[i] = static_cast<const T*>(a.vals) + (r0 + i) * a.vals_stride;
      if constexpr (POS2) wp[i] = reinterpret_cast<const uint8_t*>(a.pos_words + (r0 + i) * a.word_stride);
      else pp[i] = a.pos + (r0 + i) * a.pos_stride;
    }
  }
  const int64_t whole = a.cnt & ~int64_t(15);
  // POS2 decode: lane e takes bits 2e..2e+1 of the step's word; base's bits lie above them
  // (multiples of m = 2 or 4), so (word >> 2e) & 3 | base is the permute index in one ternlog.
  const __m512i lane_shift = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i low2 = _mm512_set1_epi32(3);
  for (int64_t j = 0, q = 0; j < whole; j += 16, q += step) {
    __m512 xlo[B], xhi[B];
#pragma GCC unroll 4
    for (int b = 0; b < B; ++b) {
      xlo[b] = _mm512_loadu_ps(a.x[b] + 2 * j);
      xhi[b] = _mm512_loadu_ps(a.x[b] + 2 * j + 16);
      // Pinned in registers: otherwise GCC folds the loads into every row's permute (the permute
      // overwrites a table when the index is shared by several activations), doubling the loads.
      asm("" : "+v"(xlo[b]), "+v"(xhi[b]));
    }
#pragma GCC unroll 16
    for (int i = 0; i < RB; ++i) {
      if constexpr (PF) {  // the same columns of the next group of rows, into L2
        _mm_prefetch(reinterpret_cast<const char*>(vp[i] + j + RB * a.vals_stride), _MM_HINT_T1);
        if constexpr (POS2) {
          if ((j & 255) == 0)
            _mm_prefetch(reinterpret_cast<const char*>(wp[i] + (j >> 2) + RB * a.word_stride * 4), _MM_HINT_T1);
        } else if ((j & 63) == 0) {
          _mm_prefetch(reinterpret_cast<const char*>(pp[i] + j + RB * a.pos_stride), _MM_HINT_T1);
        }
      }
      __m512i idx;
      if constexpr (POS2) {
        uint32_t bits;
        std::memcpy(&bits, wp[i] + (q >> 2), 4);  // any alignment (the caller's array)
        const __m512i word = _mm512_set1_epi32(int(bits));
        idx = _mm512_ternarylogic_epi32(_mm512_srlv_epi32(word, lane_shift), low2, base, 0xEA);  // (a & b) | c
      } else {
        idx = _mm512_add_epi32(_mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(pp[i] + q))),
                               base);
      }
      const __m512 wv = load16<T, BF16>(vp[i] + q);
#pragma GCC unroll 4
      for (int b = 0; b < B; ++b)
        acc[i][b] = _mm512_fmadd_ps(wv, _mm512_permutex2var_ps(xlo[b], idx, xhi[b]), acc[i][b]);
    }
  }
  if (whole < a.cnt) {
    // Lanes past the last value index zeroed activations (their base points past the kept columns).
    const unsigned nv = unsigned(a.cnt - whole);
    const int64_t left_x = a.kept - 2 * whole;  // < 32
    const __mmask16 vmask = __mmask16((1u << nv) - 1u);
    const __mmask16 xlo_m = left_x >= 16 ? __mmask16(0xffff) : __mmask16((1u << left_x) - 1u);
    const __mmask16 xhi_m = left_x <= 16 ? __mmask16(0) : __mmask16((1u << (left_x - 16)) - 1u);
    __m512 xlo[B], xhi[B];
#pragma GCC unroll 4
    for (int b = 0; b < B; ++b) {
      xlo[b] = _mm512_maskz_loadu_ps(xlo_m, a.x[b] + 2 * whole);
      xhi[b] = _mm512_maskz_loadu_ps(xhi_m, a.x[b] + 2 * whole + 16);
    }
#pragma GCC unroll 16
    for (int i = 0; i < RB; ++i) {
      const T* vrow = static_cast<const T*>(a.vals) + (r0 + i) * a.vals_stride;
      const uint8_t* prow = a.pos + (r0 + i) * a.pos_stride;
      const __m512i idx = _mm512_add_epi32(_mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(vmask, prow + whole)), base);
      const __m512 wv = load_n<T, BF16>(vrow + whole, nv);
#pragma GCC unroll 4
      for (int b = 0; b < B; ++b)
        acc[i][b] = _mm512_fmadd_ps(wv, _mm512_permutex2var_ps(xlo[b], idx, xhi[b]), acc[i][b]);
    }
  }
  store_totals<RB, B>(acc, a.out, r0);
}

template <class T, bool BF16, int B>
HINM_AVX512 void rows_b(const RowsArgs& a) {
  constexpr int RB = B == 1 ? 8 : B == 2 ? 4 : B == 3 ? 4 : 3;
  int64_t r = 0;
  if (rows_uses_positions(a.n, a.m)) {
    alignas(64) int32_t base_arr[16];
    for (int j = 0; j < 16; ++j) base_arr[j] = (j / a.n) * a.m;
    const __m512i base = _mm512_load_si512(base_arr);
    // Rows up to a block boundary alone, then whole blocks from the pack. Not for weights streaming
    // from memory: there the canonical rows with prefetches were faster (4096x4096 2:4: ~1.05x).
    if (a.pvals && !a.prefetch) {
      constexpr int PRB = B == 1 ? kPackRows : kPackRows / 2;
      for (; r < a.rows && (a.slot0 + r) % kPackRows != 0; ++r) rows_perm_rb<T, BF16, 1, B, false>(a, r, base);
      const bool pos2 = pack_positions_2bit(a.m);
      for (; r + kPackRows <= a.rows; r += kPackRows)
        for (int h = 0; h < kPackRows; h += PRB) {
          if (pos2) rows_perm_rb<T, BF16, PRB, B, false, true, true>(a, r + h, base);
          else rows_perm_rb<T, BF16, PRB, B, false, true>(a, r + h, base);
        }
    }
    if (a.pos_words) {  // the positions as 2-bit words: a quarter of the position bytes
      if (a.prefetch) {
        for (; r + RB <= a.rows; r += RB) rows_perm_rb<T, BF16, RB, B, true, false, true>(a, r, base);
      } else {
        for (; r + RB <= a.rows; r += RB) rows_perm_rb<T, BF16, RB, B, false, false, true>(a, r, base);
      }
      for (; r < a.rows; ++r) rows_perm_rb<T, BF16, 1, B, false, false, true>(a, r, base);
      return;
    }
    if (a.prefetch) {
      for (; r + RB <= a.rows; r += RB) rows_perm_rb<T, BF16, RB, B, true>(a, r, base);
    } else {
      for (; r + RB <= a.rows; r += RB) rows_perm_rb<T, BF16, RB, B, false>(a, r, base);
    }
    for (; r < a.rows; ++r) rows_perm_rb<T, BF16, 1, B, false>(a, r, base);
    return;
  }
  for (; r + RB <= a.rows; r += RB) rows_rb<T, BF16, RB, B>(a, r);
  for (; r < a.rows; ++r) rows_rb<T, BF16, 1, B>(a, r);
}

template <class T, bool BF16>
HINM_AVX512 void rows_t(const RowsArgs& a) {
  switch (a.batch) {
    case 1: return rows_b<T, BF16, 1>(a);
    case 2: return rows_b<T, BF16, 2>(a);
    case 3: return rows_b<T, BF16, 3>(a);
    case 4: return rows_b<T, BF16, 4>(a);
  }
  throw std::logic_error("spmm avx512 rows: batch must be 1..4");
}

HINM_AVX512 void rows(const RowsArgs& a) {
  switch (a.vdt) {
    case DType::f32: return rows_t<float, false>(a);
    case DType::f16: return rows_t<uint16_t, false>(a);
    case DType::bf16: return rows_t<uint16_t, true>(a);
    case DType::i8: return rows_t<int8_t, false>(a);
    default: break;
  }
  require_weight_dtype(a.vdt, "values");
}

HINM_AVX512 void to_f32(const void* src, DType t, int64_t count, float* dst) {
  int64_t i = 0;
  if (t == DType::f32) {
    const float* s = static_cast<const float*>(src);
    for (; i < count; ++i) dst[i] = s[i];
    return;
  }
  for (; i + 16 <= count; i += 16) {
    __m512 v;
    if (t == DType::f16) v = load_f16(static_cast<const uint16_t*>(src) + i, 16);
    else if (t == DType::bf16) v = load_bf16(static_cast<const uint16_t*>(src) + i, 16);
    else v = load_i8(static_cast<const int8_t*>(src) + i, 16);
    _mm512_storeu_ps(dst + i, v);
  }
  for (; i < count; ++i) dst[i] = load_as_float(src, t, i);
}

HINM_AVX512 bool gather_cols(const float* src, const int32_t* cols, int64_t count, uint32_t limit, float* dst) {
  const __m512i lim = _mm512_set1_epi32(int(limit));
  __mmask16 all_in = 0xffff;
  for (int64_t c = 0; c < count; c += 16) {
    const __mmask16 live = count - c >= 16 ? __mmask16(0xffff) : __mmask16((1u << (count - c)) - 1u);
    const __m512i idx = _mm512_maskz_loadu_epi32(live, cols + c);
    const __mmask16 in = _mm512_mask_cmplt_epu32_mask(live, idx, lim);
    all_in &= __mmask16(in | ~live);
    const __m512 x = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), in, idx, src, 4);
    _mm512_mask_storeu_ps(dst + c, live, x);
  }
  return all_in == 0xffff;
}

}  // namespace

// The panel path (batch above the rows kernels' range) runs spmm_avx512_panel.cpp's kernels, which
// read the in-group positions directly; the offsets-table panel kernel is never needed here.
const SpmmKernels& kernels_avx512() {
  static const SpmmKernels k{"avx512", kernels_avx2().panel, rows, to_f32, kernels_avx2().offsets, true, gather_cols};
  return k;
}

}  // namespace hinm::detail

#else
namespace hinm::detail {
const SpmmKernels& kernels_avx512() { return kernels_generic(); }
}  // namespace hinm::detail
#endif
