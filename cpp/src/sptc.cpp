#include "hinm/sptc.hpp"

#include <cstdio>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "hinm/dispatch.hpp"
#include "hinm/parallel.hpp"

namespace hinm {

namespace {

using sptc::Geometry;
using sptc::ValueKind;

const char* kind_pattern(ValueKind k) { return k == ValueKind::f32 ? "1:2" : "2:4"; }

// The metadata buffer as bytes; block words are copied through memcpy so any alignment works.
unsigned char* meta_bytes(const Matrix& metadata, int64_t n_words, const char* fn) {
  if (metadata.stride != metadata.cols && metadata.rows > 1)
    throw std::invalid_argument(std::string(fn) + ": metadata must be contiguous");
  const int64_t bytes = metadata.rows * metadata.cols * dtype_size(metadata.dtype);
  if (bytes != 4 * n_words)
    throw std::invalid_argument(std::string(fn) + ": metadata has " + std::to_string(bytes) + " bytes, expected " +
                                std::to_string(4 * n_words) + " (" + std::to_string(n_words / 32) +
                                " blocks of 32 uint32 words)");
  if (metadata.data == nullptr && bytes > 0) throw std::invalid_argument(std::string(fn) + ": metadata: null data");
  return static_cast<unsigned char*>(metadata.data);
}

// First offending (row, chunk) over all row blocks, reported independently of thread timing.
struct FirstError {
  std::vector<int64_t> row, chunk;
  std::vector<int> detail;
  explicit FirstError(int64_t blocks) : row(size_t(blocks), -1), chunk(size_t(blocks), -1), detail(size_t(blocks), 0) {}
  void note(int64_t blk, int64_t r, int64_t q, int d) {
    if (row[size_t(blk)] < 0) row[size_t(blk)] = r, chunk[size_t(blk)] = q, detail[size_t(blk)] = d;
  }
  int64_t first() const {
    for (size_t b = 0; b < row.size(); ++b)
      if (row[b] >= 0) return int64_t(b);
    return -1;
  }
};

// Runs body(R, words) for each row block R, with words = the 32 * (K / block_cols) metadata
// words of that row block (block c2 at words[32*c2]); row blocks own disjoint words.
template <class Body>
void for_row_blocks(const Geometry& g, int64_t m, int64_t k, const Body& body) {
  const int64_t row_blocks = m / g.block_rows, kblocks = k / g.block_cols();
  parallel_for(row_blocks, 1, [&](int64_t b0, int64_t b1) {
    std::vector<uint32_t> words(size_t(kblocks * 32));
    for (int64_t blk = b0; blk < b1; ++blk) body(blk, words.data());
  });
}

// Word position of the code of chunk q of row i, relative to the row block's local words.
inline int64_t local_word(const Geometry& g, int64_t m, int64_t i, int64_t q, int* shift) {
  const sptc::WordPos p = sptc::chunk_word(g, m, i, q);
  *shift = p.shift;
  return (p.block / (m / g.block_rows)) * 32 + p.lane;  // block = c2 * row_blocks + R
}

void store_block_words(unsigned char* meta, const uint32_t* words, const Geometry& g, int64_t m, int64_t k,
                       int64_t R) {
  const int64_t row_blocks = m / g.block_rows;
  for (int64_t c2 = 0; c2 < k / g.block_cols(); ++c2)
    std::memcpy(meta + (c2 * row_blocks + R) * 128, words + 32 * c2, 128);
}

void load_block_words(const unsigned char* meta, uint32_t* words, const Geometry& g, int64_t m, int64_t k,
                      int64_t R) {
  const int64_t row_blocks = m / g.block_rows;
  for (int64_t c2 = 0; c2 < k / g.block_cols(); ++c2)
    std::memcpy(words + 32 * c2, meta + (c2 * row_blocks + R) * 128, 128);
}

// Element bits with the sign cleared are zero: +-0.0 is zero, NaN is not.
template <class T>
bool is_zero(T bits, ValueKind kind) {
  if (kind == ValueKind::i8) return bits == 0;
  return (bits & T(std::numeric_limits<T>::max() >> 1)) == 0;
}

// 2:4 code for a chunk with <= 2 nonzeros (mask bit i = element i nonzero). Two nonzeros: their
// positions. Fewer: torch 2.13's choice (e0 -> (0,2), e1 -> (1,2), else (2,3)), so our bytes equal
// torch's; all are ascending and cover the nonzero.
uint32_t code_for_mask(unsigned mask) {
  switch (mask) {
    case 0x1: return sptc::code_of(0, 2);
    case 0x2: return sptc::code_of(1, 2);
    case 0x0: case 0x4: case 0x8: return sptc::code_of(2, 3);
    default: break;
  }
  int p[2], n = 0;
  for (int i = 0; i < 4; ++i)
    if (mask >> i & 1u) p[n++] = i;
  return sptc::code_of(p[0], p[1]);
}

std::string chunk_cols(const Geometry& g, int64_t q) {
  return "columns " + std::to_string(q * g.chunk_width) + ".." + std::to_string(q * g.chunk_width + g.chunk_width - 1);
}

}  // namespace

sptc::ValueKind sptc_kind(DType dtype, const char* what) {
  switch (dtype) {
    case DType::f16: case DType::bf16: return ValueKind::b16;
    case DType::f32: return ValueKind::f32;
    case DType::i8: return ValueKind::i8;
    default: break;
  }
  throw std::invalid_argument(std::string(what) + ": dtype " + dtype_name(dtype) +
                              " has no sparse-tensor-core format (float16, bfloat16, int8: 2:4; float32: 1:2)");
}

void sptc_check_shape(DType dtype, int64_t rows, int64_t cols, const char* what) {
  const Geometry g = sptc::geometry(sptc_kind(dtype, what));
  if (rows < 0 || rows % g.row_align != 0)
    throw std::invalid_argument(std::string(what) + ": " + std::to_string(rows) + " rows; " + dtype_name(dtype) +
                                " sparse-tensor-core metadata needs a multiple of " + std::to_string(g.row_align) +
                                " rows");
  if (cols < 0 || cols % g.col_align != 0)
    throw std::invalid_argument(std::string(what) + ": K=" + std::to_string(cols) + " columns; " + dtype_name(dtype) +
                                " needs a multiple of " + std::to_string(g.col_align) +
                                " (the CUTLASS/torch layout reorders metadata in pairs of " +
                                std::to_string(g.elem_cols()) + "-column elements)");
}

SptcMetaShape sptc_metadata_shape(DType dtype, int64_t rows, int64_t cols, SptcLayout layout) {
  sptc_check_shape(dtype, rows, cols);
  const Geometry g = sptc::geometry(sptc_kind(dtype));
  if (layout == SptcLayout::lanes) return {sptc::num_blocks(g, rows, cols), 32, 4};
  return {rows, sptc::meta_cols(g, cols), g.elem_bits / 8};
}

int64_t sptc_metadata_words(DType dtype, int64_t rows, int64_t cols) {
  sptc_check_shape(dtype, rows, cols);
  return sptc::num_words(sptc::geometry(sptc_kind(dtype)), rows, cols);
}

void sptc_compress(const Matrix& dense, const Matrix& values, const Matrix& metadata) {
  const ValueKind kind = sptc_kind(dense.dtype, "dense");
  sptc_check_shape(dense.dtype, dense.rows, dense.cols, "dense");
  const Geometry g = sptc::geometry(kind);
  const int64_t m = dense.rows, k = dense.cols, nchunks = k / g.chunk_width;
  require(dense, "dense", dense.dtype, m, k);
  require(values, "values", dense.dtype, m, k / 2);
  unsigned char* meta = meta_bytes(metadata, sptc::num_words(g, m, k), "sptc_compress");
  FirstError err(m / g.block_rows);

  dispatch_by_width(dense.dtype, [&](auto tag) {
    using T = decltype(tag);
    auto d = view_as<const T>(dense);
    auto v = view_as<T>(values);
    for_row_blocks(g, m, k, [&](int64_t R, uint32_t* words) {
      std::memset(words, 0, size_t(k / g.block_cols()) * 128);
      for (int64_t i = R * g.block_rows; i < (R + 1) * g.block_rows; ++i) {
        for (int64_t q = 0; q < nchunks; ++q) {
          const T* c = d.row(i) + q * g.chunk_width;
          unsigned mask = 0;
          int nnz = 0;
          for (int e = 0; e < g.chunk_width; ++e)
            if (!is_zero(c[e], kind)) mask |= 1u << e, ++nnz;
          if (nnz > g.kept_per_chunk) {
            err.note(R, i, q, nnz);
            continue;
          }
          uint32_t code;
          if (kind == ValueKind::f32) {  // torch: keep element 0 iff it is nonzero
            const int keep = (mask & 1u) ? 0 : 1;
            code = sptc::code_of_pair_position(keep);
            v(i, q) = c[keep];
          } else {
            code = code_for_mask(mask);
            v(i, 2 * q) = c[sptc::code_first(code)];  // gathered, so -0.0 survives bit-exactly
            v(i, 2 * q + 1) = c[sptc::code_second(code)];
          }
          int shift;
          const int64_t w = local_word(g, m, i, q, &shift);  // sets shift: evaluate first
          words[w] |= code << shift;
        }
      }
      store_block_words(meta, words, g, m, k, R);
    });
    return 0;
  });

  const int64_t b = err.first();
  if (b >= 0)
    throw std::invalid_argument("sptc_compress: row " + std::to_string(err.row[size_t(b)]) + ", chunk " +
                                std::to_string(err.chunk[size_t(b)]) + " (" + chunk_cols(g, err.chunk[size_t(b)]) +
                                ") has " + std::to_string(err.detail[size_t(b)]) + " nonzeros; " +
                                kind_pattern(kind) + " allows at most " + std::to_string(g.kept_per_chunk) +
                                " (prune the matrix first, e.g. hinm.nm_mask)");
}

void sptc_decompress(const Matrix& values, const Matrix& metadata, const Matrix& dense) {
  const ValueKind kind = sptc_kind(values.dtype, "values");
  const int64_t m = values.rows, k = 2 * values.cols;
  sptc_check_shape(values.dtype, m, k, "values (as dense [M, 2*cols])");
  const Geometry g = sptc::geometry(kind);
  require(values, "values", values.dtype, m, k / 2);
  require(dense, "dense", values.dtype, m, k);
  unsigned char* meta = meta_bytes(metadata, sptc::num_words(g, m, k), "sptc_decompress");
  const int64_t nchunks = k / g.chunk_width;
  FirstError err(m / g.block_rows);

  dispatch_by_width(values.dtype, [&](auto tag) {
    using T = decltype(tag);
    auto v = view_as<const T>(values);
    auto d = view_as<T>(dense);
    for_row_blocks(g, m, k, [&](int64_t R, uint32_t* words) {
      load_block_words(meta, words, g, m, k, R);
      for (int64_t i = R * g.block_rows; i < (R + 1) * g.block_rows; ++i) {
        for (int64_t c = 0; c < k; ++c) d(i, c) = T{0};
        for (int64_t q = 0; q < nchunks; ++q) {
          int shift;
          const int64_t w = local_word(g, m, i, q, &shift);
          const uint32_t code = words[w] >> shift & 0xFu;
          if (!sptc::code_is_ordered(code, kind)) {
            err.note(R, i, q, int(code));
            continue;
          }
          T* out = d.row(i) + q * g.chunk_width;
          if (kind == ValueKind::f32) {
            out[sptc::code_first(code) / 2] = v(i, q);
          } else {
            out[sptc::code_first(code)] = v(i, 2 * q);
            out[sptc::code_second(code)] = v(i, 2 * q + 1);
          }
        }
      }
    });
    return 0;
  });

  const int64_t b = err.first();
  if (b >= 0) {
    char hex[8];
    std::snprintf(hex, sizeof hex, "0x%X", unsigned(err.detail[size_t(b)]));
    throw std::invalid_argument("sptc_decompress: metadata code " + std::string(hex) + " of row " +
                                std::to_string(err.row[size_t(b)]) + ", chunk " + std::to_string(err.chunk[size_t(b)]) +
                                " is not a legal ordered " + kind_pattern(kind) + " code (" +
                                (kind == ValueKind::f32 ? "0x4 or 0xE" : "0x4, 0x8, 0x9, 0xC, 0xD or 0xE") + ")");
  }
}

void sptc_metadata_from_positions(const Matrix& positions, DType value_dtype, const Matrix& metadata) {
  const ValueKind kind = sptc_kind(value_dtype, "value dtype");
  const int64_t m = positions.rows, k = 2 * positions.cols;
  sptc_check_shape(value_dtype, m, k, "positions (as dense [M, 2*cols])");
  require(positions, "positions", DType::u8, m, k / 2);
  const Geometry g = sptc::geometry(kind);
  unsigned char* meta = meta_bytes(metadata, sptc::num_words(g, m, k), "sptc_metadata_from_positions");
  const int64_t nchunks = k / g.chunk_width;
  FirstError err(m / g.block_rows);
  auto pos = view_as<const uint8_t>(positions);

  for_row_blocks(g, m, k, [&](int64_t R, uint32_t* words) {
    std::memset(words, 0, size_t(k / g.block_cols()) * 128);
    for (int64_t i = R * g.block_rows; i < (R + 1) * g.block_rows; ++i) {
      for (int64_t q = 0; q < nchunks; ++q) {
        uint32_t code;
        if (kind == ValueKind::f32) {
          const int p = pos(i, q);
          if (p > 1) {
            err.note(R, i, q, 0);
            continue;
          }
          code = sptc::code_of_pair_position(p);
        } else {
          const int p0 = pos(i, 2 * q), p1 = pos(i, 2 * q + 1);
          if (!(p0 < p1 && p1 < 4)) {
            err.note(R, i, q, 0);
            continue;
          }
          code = sptc::code_of(p0, p1);
        }
        int shift;
        const int64_t w = local_word(g, m, i, q, &shift);  // sets shift: evaluate first
        words[w] |= code << shift;
      }
    }
    store_block_words(meta, words, g, m, k, R);
  });

  const int64_t b = err.first();
  if (b >= 0)
    throw std::invalid_argument("sptc_metadata_from_positions: positions of row " + std::to_string(err.row[size_t(b)]) +
                                ", group " + std::to_string(err.chunk[size_t(b)]) +
                                (kind == ValueKind::f32 ? " are not a position in {0, 1} (1:2)"
                                                        : " are not a strictly increasing pair in [0, 4) (2:4)"));
}

// ---- raw-pointer forms ----------------------------------------------------------------------------

int64_t sptc_meta_words(DType dtype, int64_t rows, int64_t cols) { return sptc_metadata_words(dtype, rows, cols); }

void sptc_compress(const Matrix& dense, const Matrix& values, uint32_t* meta) {
  sptc_compress(dense, values, make_matrix(meta, DType::u32, 1, sptc_metadata_words(dense.dtype, dense.rows, dense.cols)));
}

void sptc_decompress(const Matrix& values, const uint32_t* meta, const Matrix& dense) {
  const int64_t words = sptc_metadata_words(values.dtype, values.rows, 2 * values.cols);
  sptc_decompress(values, make_matrix(const_cast<uint32_t*>(meta), DType::u32, 1, words), dense);
}

void sptc_metadata_from_positions(const Matrix& positions, DType value_dtype, int64_t cols, uint32_t* meta) {
  if (cols != 2 * positions.cols)
    throw std::invalid_argument("sptc_metadata_from_positions: cols=" + std::to_string(cols) +
                                " is not 2 * positions.cols (" + std::to_string(positions.cols) + ")");
  sptc_metadata_from_positions(positions, value_dtype,
                               make_matrix(meta, DType::u32, 1, sptc_metadata_words(value_dtype, positions.rows, cols)));
}

}  // namespace hinm
