// Small helpers that turn a runtime dtype into a compile-time type.
#pragma once

#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "hinm/dtype.hpp"

namespace hinm {

// Calls fn(T{}) with T = an unsigned integer of the element's width: enough for code that only
// moves bit patterns (compression, gathers, scatters).
template <class Fn>
decltype(auto) dispatch_by_width(DType t, Fn&& fn) {
  switch (dtype_size(t)) {
    case 1: return fn(uint8_t{});
    case 2: return fn(uint16_t{});
    case 4: return fn(uint32_t{});
    case 8: return fn(uint64_t{});
  }
  throw std::invalid_argument("unsupported element width");
}

// The value of element i of a buffer of weight dtype t, as float (f32/f16/bf16/i8).
inline float load_as_float(const void* p, DType t, int64_t i) {
  switch (t) {
    case DType::f32: return static_cast<const float*>(p)[i];
    case DType::f16: return f16_to_f32(static_cast<const uint16_t*>(p)[i]);
    case DType::bf16: return bf16_to_f32(static_cast<const uint16_t*>(p)[i]);
    case DType::i8: return static_cast<float>(static_cast<const int8_t*>(p)[i]);
    default: break;
  }
  throw std::invalid_argument(std::string("weights of dtype ") + dtype_name(t) +
                              " are not supported (float32, float16, bfloat16, int8)");
}

inline void require_weight_dtype(DType t, const char* what) {
  if (t != DType::f32 && t != DType::f16 && t != DType::bf16 && t != DType::i8)
    throw std::invalid_argument(std::string(what) + ": dtype " + dtype_name(t) +
                                " is not supported (float32, float16, bfloat16, int8)");
}

}  // namespace hinm
