// Non-owning views over raw row-major memory. The C++ core only ever sees these: the Python
// bindings (or a C++ caller) own the buffers.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

#include "hinm/dtype.hpp"

namespace hinm {

// A 2-D row-major matrix of any stored dtype; rows are `stride` elements apart (stride >= cols).
struct Matrix {
  void* data = nullptr;
  DType dtype = DType::f32;
  int64_t rows = 0;
  int64_t cols = 0;
  int64_t stride = 0;  // in elements

  template <class T>
  T* row(int64_t r) const { return static_cast<T*>(data) + r * stride; }
};

// A typed view, used inside kernels once the dtype is dispatched.
template <class T>
struct MatrixView {
  T* data = nullptr;
  int64_t rows = 0;
  int64_t cols = 0;
  int64_t stride = 0;

  T* row(int64_t r) const { return data + r * stride; }
  T& operator()(int64_t r, int64_t c) const { return data[r * stride + c]; }
};

template <class T>
MatrixView<T> view_as(const Matrix& m) {
  return {static_cast<T*>(m.data), m.rows, m.cols, m.stride};
}

inline Matrix make_matrix(void* data, DType dtype, int64_t rows, int64_t cols, int64_t stride = -1) {
  return Matrix{data, dtype, rows, cols, stride < 0 ? cols : stride};
}

// Throws std::invalid_argument naming `what` unless m has the expected dtype and shape
// (-1 = any extent).
inline void require(const Matrix& m, const char* what, DType dtype, int64_t rows = -1, int64_t cols = -1) {
  if (m.dtype != dtype)
    throw std::invalid_argument(std::string(what) + ": expected dtype " + dtype_name(dtype) + ", got " +
                                dtype_name(m.dtype));
  if ((rows >= 0 && m.rows != rows) || (cols >= 0 && m.cols != cols))
    throw std::invalid_argument(std::string(what) + ": expected shape (" + std::to_string(rows) + ", " +
                                std::to_string(cols) + "), got (" + std::to_string(m.rows) + ", " +
                                std::to_string(m.cols) + ")");
  if (m.stride < m.cols) throw std::invalid_argument(std::string(what) + ": row stride smaller than row length");
  if (m.data == nullptr && m.rows * m.cols > 0) throw std::invalid_argument(std::string(what) + ": null data");
}

// Whether two matrices can reach a common byte (conservative: interleaved rows count as shared).
// Both must have passed require() (stride >= cols >= 0).
inline bool may_overlap(const Matrix& a, const Matrix& b) {
  if (a.rows * a.cols == 0 || b.rows * b.cols == 0) return false;
  const auto begin = [](const Matrix& m) { return reinterpret_cast<uintptr_t>(m.data); };
  const auto end = [](const Matrix& m) {
    return reinterpret_cast<uintptr_t>(m.data) + uintptr_t((m.rows - 1) * m.stride + m.cols) * dtype_size(m.dtype);
  };
  return begin(a) < end(b) && begin(b) < end(a);
}

// Kernels read their inputs while writing `out`: an output sharing memory with an input would
// give a silently wrong result.
inline void require_disjoint(const Matrix& out, const Matrix& in, const char* in_name) {
  if (may_overlap(out, in))
    throw std::invalid_argument(std::string("out overlaps ") + in_name + " in memory; pass a separate out= buffer");
}

}  // namespace hinm
