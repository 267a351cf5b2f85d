#include "common.hpp"
#include "hinm/hinm_mask.hpp"
#include "hinm_view.hpp"

using namespace hinm::py;

void bind_hinm(nb::module_& m) {
  m.def("hinm_mask", [](InArray scores, int v, int64_t kt, int n, int mm, std::optional<InArray> row_perm,
                        std::optional<InArray> col_order, OutArray mask, OutArray kept) {
    auto s = as_matrix(scores, "scores");
    auto mk = as_matrix(mask, "mask");
    auto kp = as_matrix(kept, "kept");
    const int64_t tiles = (s.rows + v - 1) / std::max(v, 1);
    hinm::require(kp, "kept", hinm::DType::i32, tiles, kt);
    const int64_t* rp = optional_i64(row_perm, s.rows, "row_perm");
    const int64_t* co = optional_i64(col_order, tiles * s.cols, "col_order");
    nb::gil_scoped_release nogil;
    hinm::hinm_mask(s, v, kt, {n, mm}, rp, co, mk, static_cast<int32_t*>(kp.data));
  }, nb::arg("scores"), nb::arg("v"), nb::arg("kept_columns"), nb::arg("n"), nb::arg("m"), nb::arg("row_perm").none(),
     nb::arg("col_order").none(), nb::arg("mask"), nb::arg("kept"));

  m.def("hinm_compress", [](InArray weight, std::optional<InArray> scores, int v, int64_t kt, int n, int mm,
                            std::optional<InArray> row_perm, std::optional<InArray> col_order, OutArray values,
                            OutArray positions, OutArray col_idx) {
    auto w = as_matrix(weight, "weight");
    auto s = as_optional_matrix(scores, "scores");
    auto c = as_matrix(col_idx, "col_idx");
    hinm::HiNMView out = make_hinm_view(as_matrix(values, "values"), as_matrix(positions, "positions"), std::nullopt,
                                  row_perm, w.rows, w.cols, v, kt, n, mm);
    hinm::require(c, "col_idx", hinm::DType::i32, out.tiles(), kt);
    const int64_t* co = optional_i64(col_order, out.tiles() * w.cols, "col_order");
    nb::gil_scoped_release nogil;
    hinm::hinm_compress(w, s, out, static_cast<int32_t*>(c.data), co);
  }, nb::arg("weight"), nb::arg("scores").none(), nb::arg("v"), nb::arg("kept_columns"), nb::arg("n"), nb::arg("m"),
     nb::arg("row_perm").none(), nb::arg("col_order").none(), nb::arg("values"), nb::arg("positions"),
     nb::arg("col_idx"));

  m.def("hinm_validate", [](InArray values, InArray positions, std::optional<InArray> col_idx,
                            std::optional<InArray> row_perm, int64_t rows, int64_t cols, int v, int64_t kt, int n,
                            int mm) {
    auto w = make_hinm_view(as_matrix(values, "values"), as_matrix(positions, "positions"), col_idx, row_perm, rows,
                            cols, v, kt, n, mm);
    nb::gil_scoped_release nogil;
    hinm::hinm_validate(w);
  }, nb::arg("values"), nb::arg("positions"), nb::arg("col_idx").none(), nb::arg("row_perm").none(), nb::arg("rows"),
     nb::arg("cols"), nb::arg("v"), nb::arg("kept_columns"), nb::arg("n"), nb::arg("m"));

  m.def("hinm_decompress", [](InArray values, InArray positions, std::optional<InArray> col_idx,
                              std::optional<InArray> row_perm, int64_t rows, int64_t cols, int v, int64_t kt, int n,
                              int mm, OutArray dense) {
    auto w = make_hinm_view(as_matrix(values, "values"), as_matrix(positions, "positions"), col_idx, row_perm, rows,
                            cols, v, kt, n, mm);
    auto d = as_matrix(dense, "dense");
    nb::gil_scoped_release nogil;
    hinm::hinm_decompress(w, d);
  }, nb::arg("values"), nb::arg("positions"), nb::arg("col_idx").none(), nb::arg("row_perm").none(), nb::arg("rows"),
     nb::arg("cols"), nb::arg("v"), nb::arg("kept_columns"), nb::arg("n"), nb::arg("m"), nb::arg("dense"));
}
