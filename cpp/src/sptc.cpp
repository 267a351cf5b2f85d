#include "hinm/sptc.hpp"

#include <cstring>
#include <string>

#include "hinm/dispatch.hpp"
#include "hinm/parallel.hpp"
#include "hinm/sptc_index.hpp"

namespace hinm {

namespace {

bool is_tf32(DType t) { return t == DType::f32; }
bool wide_meta(DType t) { return t == DType::i8; }
int chunk_width(DType t) { return is_tf32(t) ? 2 : 4; }

std::string where(int64_t r, int64_t q) { return "row " + std::to_string(r) + ", chunk " + std::to_string(q); }

// (i0, i1) of a 2:4 chunk from its nonzero flags; fewer than two nonzeros are covered the way
// PyTorch 2.13 does it, so the bytes match torch's converter. Returns false for > 2 nonzeros.
bool chunk_positions(const bool nz[4], int& i0, int& i1) {
  int pos[4], count = 0;
  for (int j = 0; j < 4; ++j)
    if (nz[j]) pos[count++] = j;
  if (count > 2) return false;
  if (count == 2) { i0 = pos[0]; i1 = pos[1]; return true; }
  if (count == 1 && pos[0] < 2) { i0 = pos[0]; i1 = 2; return true; }
  i0 = 2; i1 = 3;
  return true;
}

// Nonzero test on bit patterns, as `dense != 0` reads them: for floats -0.0 is zero.
template <class T>
bool nonzero(T bits, bool is_float) {
  const T magnitude = is_float ? T(bits & T(~(T(1) << (8 * sizeof(T) - 1)))) : bits;
  return magnitude != T{0};
}

}  // namespace

int64_t sptc_meta_words(DType dtype, int64_t rows, int64_t cols) {
  int row_align, col_align;
  switch (dtype) {
    case DType::f16: case DType::bf16: row_align = 32; col_align = 32; break;
    case DType::f32: row_align = 32; col_align = 16; break;
    case DType::i8: row_align = 16; col_align = 64; break;
    default:
      throw std::invalid_argument(std::string("sparse tensor cores take float16, bfloat16, int8 (2:4) or float32 "
                                              "(1:2), not ") + dtype_name(dtype));
  }
  if (rows <= 0 || rows % row_align)
    throw std::invalid_argument("sptc: rows (" + std::to_string(rows) + ") must be a positive multiple of " +
                                std::to_string(row_align) + " for " + dtype_name(dtype));
  if (cols <= 0 || cols % col_align)
    throw std::invalid_argument("sptc: columns (" + std::to_string(cols) + ") must be a positive multiple of " +
                                std::to_string(col_align) + " for " + dtype_name(dtype));
  // 1 metadata bit per dense element (2:4 codes: 4 bits per 4 elements); tf32: 4 bits per pair.
  return rows * cols / (is_tf32(dtype) ? 16 : 32);
}

void sptc_compress(const Matrix& dense, const Matrix& values, uint32_t* meta) {
  const int64_t words = sptc_meta_words(dense.dtype, dense.rows, dense.cols);
  require(values, "values", dense.dtype, dense.rows, dense.cols / 2);
  std::memset(meta, 0, static_cast<size_t>(words) * 4);
  const int cw = chunk_width(dense.dtype);
  const bool wide = wide_meta(dense.dtype);
  dispatch_by_width(dense.dtype, [&](auto tag) {
    using T = decltype(tag);
    auto d = view_as<const T>(dense);
    auto v = view_as<T>(values);
    // Rows of one 32-row (16 for int8) block write disjoint words, so blocks run in parallel.
    const int64_t block_rows = wide ? 16 : 32;
    parallel_for(d.rows / block_rows, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t r = b0 * block_rows; r < b1 * block_rows; ++r) {
        for (int64_t q = 0; q < d.cols / cw; ++q) {
          const T* c = d.row(r) + q * cw;
          uint32_t code;
          if (cw == 2) {
            const bool nz0 = nonzero(c[0], true), nz1 = nonzero(c[1], true);
            if (nz0 && nz1) throw std::invalid_argument("sptc: more than 1 nonzero in a 1:2 pair at " + where(r, q));
            code = nz0 ? 0x4u : 0xEu;  // an all-zero pair takes 0xE, as PyTorch encodes it
            v(r, q) = nz0 ? c[0] : c[1];
          } else {
            const bool fl = dense.dtype != DType::i8;
            bool nz[4] = {nonzero(c[0], fl), nonzero(c[1], fl), nonzero(c[2], fl), nonzero(c[3], fl)};
            int i0, i1;
            if (!chunk_positions(nz, i0, i1))
              throw std::invalid_argument("sptc: more than 2 nonzeros in a 2:4 chunk at " + where(r, q));
            code = sptc::code(i0, i1);
            v(r, 2 * q) = c[i0];
            v(r, 2 * q + 1) = c[i1];
          }
          const auto slot = sptc::code_slot(r, q, d.rows, wide);
          meta[slot.word] |= code << slot.shift;
        }
      }
    });
    return 0;
  });
}

void sptc_decompress(const Matrix& values, const uint32_t* meta, const Matrix& dense) {
  sptc_meta_words(dense.dtype, dense.rows, dense.cols);
  require(values, "values", dense.dtype, dense.rows, dense.cols / 2);
  const int cw = chunk_width(dense.dtype);
  const bool wide = wide_meta(dense.dtype);
  dispatch_by_width(dense.dtype, [&](auto tag) {
    using T = decltype(tag);
    auto v = view_as<const T>(values);
    auto d = view_as<T>(dense);
    parallel_for(d.rows, 16, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        T* out = d.row(r);
        for (int64_t c = 0; c < d.cols; ++c) out[c] = T{0};
        for (int64_t q = 0; q < d.cols / cw; ++q) {
          const auto slot = sptc::code_slot(r, q, d.rows, wide);
          const uint32_t code = meta[slot.word] >> slot.shift & 0xFu;
          if (cw == 2) {
            if (!sptc::legal_code_tf32(code))
              throw std::invalid_argument("sptc: illegal tf32 metadata code at " + where(r, q));
            out[q * 2 + (code == 0x4u ? 0 : 1)] = v(r, q);
          } else {
            if (!sptc::legal_code(code)) throw std::invalid_argument("sptc: illegal metadata code at " + where(r, q));
            out[q * 4 + (code & 3u)] = v(r, 2 * q);
            out[q * 4 + (code >> 2 & 3u)] = v(r, 2 * q + 1);
          }
        }
      }
    });
    return 0;
  });
}

void sptc_metadata_from_positions(const Matrix& positions, DType dtype, int64_t cols, uint32_t* meta) {
  const int64_t words = sptc_meta_words(dtype, positions.rows, cols);
  require(positions, "positions", DType::u8, positions.rows, cols / 2);
  std::memset(meta, 0, static_cast<size_t>(words) * 4);
  const bool tf32 = is_tf32(dtype), wide = wide_meta(dtype);
  auto p = view_as<const uint8_t>(positions);
  for (int64_t r = 0; r < p.rows; ++r) {
    for (int64_t q = 0; q < cols / chunk_width(dtype); ++q) {
      uint32_t code;
      if (tf32) {
        if (p(r, q) > 1) throw std::invalid_argument("sptc: 1:2 position above 1 at " + where(r, q));
        code = p(r, q) == 0 ? 0x4u : 0xEu;
      } else {
        const int i0 = p(r, 2 * q), i1 = p(r, 2 * q + 1);
        if (!(i0 < i1 && i1 < 4)) throw std::invalid_argument("sptc: 2:4 positions not ascending below 4 at " + where(r, q));
        code = sptc::code(i0, i1);
      }
      const auto slot = sptc::code_slot(r, q, p.rows, wide);
      meta[slot.word] |= code << slot.shift;
    }
  }
}

}  // namespace hinm
