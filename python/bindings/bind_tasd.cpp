#include <nanobind/stl/vector.h>

#include <vector>

#include "common.hpp"
#include "hinm/tasd.hpp"

using namespace hinm::py;

void bind_tasd(nb::module_& m) {
  m.def("tasd_decompose", [](InArray tensor, std::optional<InArray> scores, std::vector<int> ns, std::vector<int> ms,
                             std::vector<OutArray> values, std::vector<OutArray> positions, double threshold) {
    if (ns.size() != ms.size() || ns.size() != values.size() || ns.size() != positions.size())
      throw nb::value_error("tasd_decompose: ns, ms, values and positions must have one entry per term");
    auto t = as_matrix(tensor, "tensor");
    auto s = as_optional_matrix(scores, "scores");
    std::vector<hinm::TASDTerm> terms;
    for (size_t i = 0; i < ns.size(); ++i) {
      const std::string name = "term " + std::to_string(i);
      terms.push_back({{ns[i], ms[i]}, as_matrix(values[i], name + " values"),
                       as_matrix(positions[i], name + " positions")});
    }
    nb::gil_scoped_release nogil;
    hinm::tasd_decompose(t, s, terms, threshold);
  }, nb::arg("tensor"), nb::arg("scores").none(), nb::arg("ns"), nb::arg("ms"), nb::arg("values"),
     nb::arg("positions"), nb::arg("threshold") = 0.0);

  m.def("tasd_accumulate_linear", [](InArray x, InArray values, InArray positions, int n, int mm, OutArray out,
                                     bool accumulate) {
    auto xm = as_matrix(x, "x");
    hinm::TASDTerm t{{n, mm}, as_matrix(values, "values"), as_matrix(positions, "positions")};
    auto o = as_matrix(out, "out");
    nb::gil_scoped_release nogil;
    hinm::tasd_accumulate_linear(xm, t, o, accumulate);
  }, nb::arg("x"), nb::arg("values"), nb::arg("positions"), nb::arg("n"), nb::arg("m"), nb::arg("out"),
     nb::arg("accumulate"));

  m.def("tasd_accumulate_spmm", [](InArray values, InArray positions, int n, int mm, InArray b, OutArray out,
                                   bool accumulate) {
    hinm::TASDTerm t{{n, mm}, as_matrix(values, "values"), as_matrix(positions, "positions")};
    auto bm = as_matrix(b, "b");
    auto o = as_matrix(out, "out");
    nb::gil_scoped_release nogil;
    hinm::tasd_accumulate_spmm(t, bm, o, accumulate);
  }, nb::arg("values"), nb::arg("positions"), nb::arg("n"), nb::arg("m"), nb::arg("b"), nb::arg("out"),
     nb::arg("accumulate"));
}
