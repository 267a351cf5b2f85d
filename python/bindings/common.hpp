// Glue shared by the binding files: DLPack arrays in, hinm::Matrix views out, with every check
// a caller can get wrong turned into a Python exception that names the argument.
#pragma once

#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>

#include <algorithm>
#include <optional>
#include <string>

#include "hinm/build_info.hpp"
#include "hinm/matrix.hpp"

namespace nb = nanobind;

namespace hinm::py {

using InArray = nb::ndarray<nb::ro>;  // read-only input, any dtype/device: checked below
using OutArray = nb::ndarray<>;       // writable output, allocated by the Python layer

inline DType dtype_of(const nb::dlpack::dtype& d, const std::string& name) {
  using C = nb::dlpack::dtype_code;
  if (d.lanes == 1) {
    if (d.code == uint8_t(C::Float)) {
      if (d.bits == 32) return DType::f32;
      if (d.bits == 16) return DType::f16;
      if (d.bits == 64) return DType::f64;
    } else if (d.code == uint8_t(C::Bfloat) && d.bits == 16) {
      return DType::bf16;
    } else if (d.code == uint8_t(C::Int)) {
      if (d.bits == 8) return DType::i8;
      if (d.bits == 32) return DType::i32;
      if (d.bits == 64) return DType::i64;
    } else if (d.code == uint8_t(C::UInt)) {
      if (d.bits == 8) return DType::u8;
      if (d.bits == 16) return DType::u16;
      if (d.bits == 32) return DType::u32;
    } else if (d.code == uint8_t(C::Bool) && d.bits == 8) {
      return DType::u8;
    }
  }
  throw nb::type_error((name + ": unsupported dtype (code " + std::to_string(d.code) + ", " +
                        std::to_string(d.bits) + " bits)").c_str());
}

template <class A>
void require_cpu(const A& a, const std::string& name) {
  if (a.device_type() == nb::device::cpu::value) return;
  if (!built_with_cuda())
    throw nb::value_error((name + " is on a GPU, but hinm was built without CUDA").c_str());
  throw nb::value_error((name + " is on a GPU; this function runs on the CPU only").c_str());
}

// A 2-D view (1-D arrays are one row). The last axis must be contiguous and strides non-negative.
template <class A>
Matrix as_matrix(const A& a, const std::string& name) {
  require_cpu(a, name);
  Matrix m;
  m.dtype = dtype_of(a.dtype(), name);
  m.data = const_cast<void*>(static_cast<const void*>(a.data()));
  if (a.ndim() == 1) {
    m.rows = 1;
    m.cols = int64_t(a.shape(0));
    if (m.cols > 1 && a.stride(0) != 1)
      throw nb::value_error((name + " must be contiguous (got a strided 1-D array)").c_str());
    m.stride = m.cols;
    return m;
  }
  if (a.ndim() != 2)
    throw nb::value_error((name + " must be a 2-D array, got " + std::to_string(a.ndim()) + " dimensions").c_str());
  m.rows = int64_t(a.shape(0));
  m.cols = int64_t(a.shape(1));
  if (m.rows == 0 || m.cols == 0) {  // empty: strides carry no information (numpy may report 0)
    m.stride = m.cols;
    return m;
  }
  const int64_t s0 = a.stride(0), s1 = a.stride(1);
  if (m.cols > 1 && s1 != 1)
    throw nb::value_error((name + " must have a contiguous last axis (row-major); got strides (" +
                           std::to_string(s0) + ", " + std::to_string(s1) + ")")
                              .c_str());
  if (m.rows > 1 && (s0 < m.cols || s0 <= 0))
    throw nb::value_error((name + " has a negative or overlapping row stride (" + std::to_string(s0) + ")").c_str());
  m.stride = m.rows > 1 ? s0 : m.cols;
  return m;
}

template <class A>
Matrix as_optional_matrix(const std::optional<A>& a, const std::string& name) {
  if (!a) return Matrix{};
  return as_matrix(*a, name);
}

}  // namespace hinm::py

// One binding function per concern (python/bindings/bind_<concern>.cpp).
void bind_core(nb::module_& m);
void bind_nm(nb::module_& m);
void bind_sptc(nb::module_& m);
void bind_hinm(nb::module_& m);
void bind_spmm(nb::module_& m);
void bind_permute(nb::module_& m);
void bind_tasd(nb::module_& m);
void bind_cuda(nb::module_& m);
