#include <nanobind/stl/pair.h>

#include "common.hpp"
#include "hinm/spmm.hpp"

using namespace hinm::py;

namespace {

// The raw HiNM container from its arrays (plain N:M: v = R, kept = K, no col_idx / row_perm).
hinm::HiNMView make_view(InArray values, InArray positions, const std::optional<InArray>& col_idx,
                         const std::optional<InArray>& row_perm, int64_t rows, int64_t cols, int v, int64_t kept,
                         int n, int m) {
  hinm::HiNMView w;
  w.rows = rows;
  w.cols = cols;
  w.v = v;
  w.kept = kept;
  w.pattern = {n, m};
  w.values = as_matrix(values, "values");
  w.positions = as_matrix(positions, "indices");
  if (col_idx) {
    auto c = as_matrix(*col_idx, "col_idx");
    hinm::require(c, "col_idx", hinm::DType::i32);
    if (c.rows * c.cols != w.tiles() * kept || (c.rows > 1 && c.stride != c.cols))
      throw nb::value_error("col_idx must be a contiguous int32 array of tiles * kept entries");
    w.col_idx = static_cast<const int32_t*>(c.data);
  }
  if (row_perm) {
    auto r = as_matrix(*row_perm, "row_perm");
    hinm::require(r, "row_perm", hinm::DType::i64);
    if (r.rows * r.cols != rows || r.rows > 1) throw nb::value_error("row_perm must be a 1-D int64 array of R entries");
    w.row_perm = static_cast<const int64_t*>(r.data);
  }
  return w;
}

// A weight prepared once for repeated products: the view plus the arrays it points into (held
// here, so the pointers stay valid) and the optional kernel masks. Per call only the activations
// and the output cross the binding.
struct SpmmWeight {
  hinm::HiNMView view;
  InArray values, positions;
  std::optional<InArray> col_idx, row_perm, masks, pack_values, pack_positions;
  hinm::Matrix mask_view;
  hinm::RowsPack pack;

  const hinm::Matrix* mask_ptr() const { return masks ? &mask_view : nullptr; }
  const hinm::RowsPack* pack_ptr() const { return pack.values ? &pack : nullptr; }
};

// The rows pack of w from its two arrays (1-D, contiguous: rows_pack_size(w) values of w's dtype,
// rows_pack_position_bytes(w) uint8), checked here: the kernels read it without bounds checks.
template <class A>
hinm::RowsPack rows_pack(const hinm::HiNMView& w, const std::optional<A>& values, const std::optional<A>& positions) {
  if (!values && !positions) return {};
  if (!values || !positions) throw nb::value_error("rows pack: need both pack_values and pack_indices");
  const int64_t size = hinm::rows_pack_size(w), pos_bytes = hinm::rows_pack_position_bytes(w);
  auto vm = as_matrix(*values, "pack_values");
  auto pm = as_matrix(*positions, "pack_indices");
  if (vm.dtype != w.values.dtype) throw nb::type_error("pack_values: dtype differs from the weight's values");
  hinm::require(pm, "pack_indices", hinm::DType::u8);
  // as_matrix: a 1-D array is one contiguous row
  if (vm.rows != 1 || vm.cols != size || pm.rows != 1 || pm.cols != pos_bytes)
    throw nb::value_error(("rows pack: expected 1-D contiguous arrays of " + std::to_string(size) + " values and " +
                           std::to_string(pos_bytes) + " position bytes").c_str());
  return {vm.data, static_cast<const uint8_t*>(pm.data)};
}

}  // namespace

void bind_spmm(nb::module_& m) {
  nb::class_<SpmmWeight>(m, "SpmmWeight")
      .def_prop_ro("rows", [](const SpmmWeight& w) { return w.view.rows; })
      .def_prop_ro("cols", [](const SpmmWeight& w) { return w.view.cols; });

  m.def("spmm_weight", [](InArray values, InArray positions, std::optional<InArray> col_idx,
                          std::optional<InArray> row_perm, int64_t rows, int64_t cols, int v, int64_t kept, int n,
                          int mm, std::optional<InArray> masks, std::optional<InArray> pack_values,
                          std::optional<InArray> pack_positions) {
    SpmmWeight w{make_view(values, positions, col_idx, row_perm, rows, cols, v, kept, n, mm), values, positions,
                 col_idx, row_perm, masks, pack_values, pack_positions, as_optional_matrix(masks, "masks"), {}};
    w.pack = rows_pack(w.view, pack_values, pack_positions);
    return w;
  }, nb::arg("values"), nb::arg("indices"), nb::arg("col_idx").none(), nb::arg("row_perm").none(),
     nb::arg("rows"), nb::arg("cols"), nb::arg("v"), nb::arg("kept"), nb::arg("n"), nb::arg("m"),
     nb::arg("masks").none(), nb::arg("pack_values").none() = nb::none(), nb::arg("pack_indices").none() = nb::none());

  m.def("rows_pack_sizes", [](InArray values, InArray positions, std::optional<InArray> col_idx,
                             std::optional<InArray> row_perm, int64_t rows, int64_t cols, int v, int64_t kept, int n,
                             int mm) {
    const auto w = make_view(values, positions, col_idx, row_perm, rows, cols, v, kept, n, mm);
    return std::make_pair(hinm::rows_pack_size(w), hinm::rows_pack_position_bytes(w));
  }, nb::arg("values"), nb::arg("indices"), nb::arg("col_idx").none(), nb::arg("row_perm").none(),
     nb::arg("rows"), nb::arg("cols"), nb::arg("v"), nb::arg("kept"), nb::arg("n"), nb::arg("m"));

  m.def("pack_rows", [](InArray values, InArray positions, std::optional<InArray> col_idx,
                        std::optional<InArray> row_perm, int64_t rows, int64_t cols, int v, int64_t kept, int n,
                        int mm, OutArray pack_values, OutArray pack_positions) {
    auto w = make_view(values, positions, col_idx, row_perm, rows, cols, v, kept, n, mm);
    const hinm::RowsPack pack = rows_pack<OutArray>(w, pack_values, pack_positions);
    nb::gil_scoped_release nogil;
    hinm::pack_rows(w, const_cast<void*>(pack.values), const_cast<uint8_t*>(pack.positions));
  }, nb::arg("values"), nb::arg("indices"), nb::arg("col_idx").none(), nb::arg("row_perm").none(),
     nb::arg("rows"), nb::arg("cols"), nb::arg("v"), nb::arg("kept"), nb::arg("n"), nb::arg("m"),
     nb::arg("pack_values"), nb::arg("pack_indices"));

  m.def("linear_w", [](const SpmmWeight& w, InArray x, std::optional<InArray> bias, OutArray out, bool accumulate) {
    auto xm = as_matrix(x, "x");
    auto om = as_matrix(out, "out");
    const float* bp = nullptr;
    if (bias) {
      auto bm = as_matrix(*bias, "bias");
      hinm::require(bm, "bias", hinm::DType::f32, 1, w.view.rows);
      bp = static_cast<const float*>(bm.data);
    }
    nb::gil_scoped_release nogil;
    hinm::linear(xm, w.view, bp, om, accumulate, w.mask_ptr(), w.pack_ptr());
  }, nb::arg("w"), nb::arg("x"), nb::arg("bias").none(), nb::arg("out"), nb::arg("accumulate"));

  m.def("spmm_w", [](const SpmmWeight& w, InArray b, OutArray out, bool accumulate) {
    auto bm = as_matrix(b, "b");
    auto om = as_matrix(out, "out");
    nb::gil_scoped_release nogil;
    hinm::spmm(w.view, bm, om, accumulate, w.mask_ptr(), w.pack_ptr());
  }, nb::arg("w"), nb::arg("b"), nb::arg("out"), nb::arg("accumulate"));

  m.def("spmm", [](InArray values, InArray positions, std::optional<InArray> col_idx, std::optional<InArray> row_perm,
                   int64_t rows, int64_t cols, int v, int64_t kept, int n, int mm, InArray b, OutArray out,
                   bool accumulate, std::optional<InArray> masks) {
    auto w = make_view(values, positions, col_idx, row_perm, rows, cols, v, kept, n, mm);
    auto bm = as_matrix(b, "b");
    auto om = as_matrix(out, "out");
    auto mk = as_optional_matrix(masks, "masks");
    nb::gil_scoped_release nogil;
    hinm::spmm(w, bm, om, accumulate, masks ? &mk : nullptr);
  }, nb::arg("values"), nb::arg("indices"), nb::arg("col_idx").none(), nb::arg("row_perm").none(),
     nb::arg("rows"), nb::arg("cols"), nb::arg("v"), nb::arg("kept"), nb::arg("n"), nb::arg("m"), nb::arg("b"),
     nb::arg("out"), nb::arg("accumulate"), nb::arg("masks").none());

  m.def("linear", [](InArray x, InArray values, InArray positions, std::optional<InArray> col_idx,
                     std::optional<InArray> row_perm, int64_t rows, int64_t cols, int v, int64_t kept, int n, int mm,
                     std::optional<InArray> bias, OutArray out, bool accumulate, std::optional<InArray> masks) {
    auto w = make_view(values, positions, col_idx, row_perm, rows, cols, v, kept, n, mm);
    auto xm = as_matrix(x, "x");
    auto om = as_matrix(out, "out");
    auto mk = as_optional_matrix(masks, "masks");
    const float* bp = nullptr;
    if (bias) {
      auto bm = as_matrix(*bias, "bias");
      hinm::require(bm, "bias", hinm::DType::f32, 1, rows);
      bp = static_cast<const float*>(bm.data);
    }
    nb::gil_scoped_release nogil;
    hinm::linear(xm, w, bp, om, accumulate, masks ? &mk : nullptr);
  }, nb::arg("x"), nb::arg("values"), nb::arg("indices"), nb::arg("col_idx").none(), nb::arg("row_perm").none(),
     nb::arg("rows"), nb::arg("cols"), nb::arg("v"), nb::arg("kept"), nb::arg("n"), nb::arg("m"),
     nb::arg("bias").none(), nb::arg("out"), nb::arg("accumulate"), nb::arg("masks").none());

  // (dtype name or None, columns) of build_spmm_masks' table for this weight.
  m.def("spmm_masks_layout", [](InArray values, InArray positions, std::optional<InArray> col_idx,
                                std::optional<InArray> row_perm, int64_t rows, int64_t cols, int v, int64_t kept,
                                int n, int mm) {
    auto w = make_view(values, positions, col_idx, row_perm, rows, cols, v, kept, n, mm);
    const int64_t width = hinm::spmm_masks_cols(w);
    nb::object dtype = nb::none();
    if (width > 0) dtype = nb::str(hinm::spmm_masks_are_words(w) ? "uint32" : "uint16");
    return std::make_pair(dtype, width);
  }, nb::arg("values"), nb::arg("indices"), nb::arg("col_idx").none(), nb::arg("row_perm").none(),
     nb::arg("rows"), nb::arg("cols"), nb::arg("v"), nb::arg("kept"), nb::arg("n"), nb::arg("m"));

  m.def("build_spmm_masks", [](InArray values, InArray positions, std::optional<InArray> col_idx,
                               std::optional<InArray> row_perm, int64_t rows, int64_t cols, int v, int64_t kept,
                               int n, int mm, OutArray masks) {
    auto w = make_view(values, positions, col_idx, row_perm, rows, cols, v, kept, n, mm);
    auto mk = as_matrix(masks, "masks");
    nb::gil_scoped_release nogil;
    hinm::build_spmm_masks(w, mk);
  }, nb::arg("values"), nb::arg("indices"), nb::arg("col_idx").none(), nb::arg("row_perm").none(),
     nb::arg("rows"), nb::arg("cols"), nb::arg("v"), nb::arg("kept"), nb::arg("n"), nb::arg("m"), nb::arg("masks"));

  m.def("spmm_force_isa", &hinm::spmm_force_isa, nb::arg("isa"));
}
