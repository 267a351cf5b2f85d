// Builds the raw HiNM container view (hinm::HiNMView) from the arrays of a Python HiNMTensor or
// NMTensor (plain N:M: v = R, kept = K, no col_idx / row_perm). Shared by every binding that
// reads a compressed weight.
#pragma once

#include "common.hpp"
#include "hinm/hinm_format.hpp"

namespace hinm::py {

inline const int64_t* optional_i64(const std::optional<InArray>& a, int64_t count, const char* name) {
  if (!a) return nullptr;
  auto m = as_matrix(*a, name);
  require(m, name, DType::i64);
  if (m.rows * m.cols != count || (m.rows > 1 && m.stride != m.cols))
    throw nb::value_error((std::string(name) + " must be a contiguous int64 array of " + std::to_string(count) +
                           " entries").c_str());
  return static_cast<const int64_t*>(m.data);
}

inline HiNMView make_hinm_view(const Matrix& values, const Matrix& positions, const std::optional<InArray>& col_idx,
                               const std::optional<InArray>& row_perm, int64_t rows, int64_t cols, int v,
                               int64_t kept, int n, int m) {
  HiNMView w;
  w.rows = rows;
  w.cols = cols;
  w.v = v;
  w.kept = kept;
  w.pattern = {n, m};
  w.values = values;
  w.positions = positions;
  if (v < 1) throw nb::value_error("v must be positive");
  if (col_idx) {
    auto c = as_matrix(*col_idx, "col_idx");
    require(c, "col_idx", DType::i32);
    if (c.rows * c.cols != w.tiles() * kept || (c.rows > 1 && c.stride != c.cols))
      throw nb::value_error("col_idx must be a contiguous int32 array of tiles * kept entries");
    w.col_idx = static_cast<const int32_t*>(c.data);
  }
  w.row_perm = optional_i64(row_perm, rows, "row_perm");
  return w;
}

}  // namespace hinm::py
