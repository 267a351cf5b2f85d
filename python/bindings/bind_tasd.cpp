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

}
