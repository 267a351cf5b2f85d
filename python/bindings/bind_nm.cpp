#include "common.hpp"
#include "hinm/mask.hpp"
#include "hinm/nm_format.hpp"

using namespace hinm::py;

void bind_nm(nb::module_& m) {
  m.def("nm_mask", [](InArray scores, int n, int mm, OutArray mask) {
    auto s = as_matrix(scores, "scores");
    auto k = as_matrix(mask, "mask");
    nb::gil_scoped_release nogil;
    hinm::nm_mask(s, {n, mm}, k);
  }, nb::arg("scores"), nb::arg("n"), nb::arg("m"), nb::arg("mask"));

  m.def("abs_scores", [](InArray weight, OutArray scores) {
    auto w = as_matrix(weight, "weight");
    auto s = as_matrix(scores, "scores");
    nb::gil_scoped_release nogil;
    hinm::abs_scores(w, s);
  }, nb::arg("weight"), nb::arg("scores"));

  m.def("compress_nm", [](InArray weight, std::optional<InArray> scores, int n, int mm, OutArray values,
                          OutArray positions) {
    auto w = as_matrix(weight, "weight");
    auto s = as_optional_matrix(scores, "scores");
    auto v = as_matrix(values, "values");
    auto p = as_matrix(positions, "positions");
    nb::gil_scoped_release nogil;
    hinm::compress_nm(w, s, {n, mm}, v, p);
  }, nb::arg("weight"), nb::arg("scores").none(), nb::arg("n"), nb::arg("m"), nb::arg("values"),
     nb::arg("positions"));

  m.def("decompress_nm", [](InArray values, InArray positions, int n, int mm, OutArray dense) {
    auto v = as_matrix(values, "values");
    auto p = as_matrix(positions, "positions");
    auto d = as_matrix(dense, "dense");
    nb::gil_scoped_release nogil;
    hinm::decompress_nm(v, p, {n, mm}, d);
  }, nb::arg("values"), nb::arg("positions"), nb::arg("n"), nb::arg("m"), nb::arg("dense"));

  m.def("validate_nm_positions", [](InArray positions, int n, int mm) {
    auto p = as_matrix(positions, "positions");
    nb::gil_scoped_release nogil;
    hinm::validate_nm_positions(p, {n, mm});
  }, nb::arg("positions"), nb::arg("n"), nb::arg("m"));
}
