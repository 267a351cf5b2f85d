#include <nanobind/stl/tuple.h>
#include <nanobind/stl/vector.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "common.hpp"
#include "hinm/permute_kmeans.hpp"
#include "hinm/permute_lap.hpp"
#include "hinm/permute_search.hpp"

using namespace hinm::py;

namespace {

hinm::Matrix f64_matrix(const InArray& a, const std::string& name) {
  auto m = as_matrix(a, name);
  hinm::require(m, name.c_str(), hinm::DType::f64);
  if (m.stride != m.cols) throw nb::value_error((name + " must be contiguous").c_str());
  return m;
}

template <class T>
void copy_out(const std::vector<T>& src, OutArray& dst, const std::string& name) {
  auto m = as_matrix(dst, name);
  if (m.rows * m.cols != int64_t(src.size()) || m.stride != m.cols)
    throw nb::value_error((name + ": output has the wrong size").c_str());
  std::memcpy(m.data, src.data(), src.size() * sizeof(T));
}

}  // namespace

void bind_permute(nb::module_& m) {
  m.def("linear_assignment", [](InArray cost, bool maximize, OutArray col_for_row) {
    auto c = f64_matrix(cost, "cost");
    std::vector<int64_t> out;
    {
      nb::gil_scoped_release nogil;
      out = hinm::linear_assignment(static_cast<const double*>(c.data), c.rows, c.cols, maximize);
    }
    copy_out(out, col_for_row, "col_for_row");
  }, nb::arg("cost"), nb::arg("maximize"), nb::arg("col_for_row"));

  m.def("balanced_kmeans", [](InArray points, int64_t k, int64_t size, uint64_t seed, int max_iter, double tol,
                              OutArray labels) {
    auto x = f64_matrix(points, "points");
    if (x.rows != k * size) throw nb::value_error("points: expected k * size rows");
    std::vector<int32_t> out;
    {
      nb::gil_scoped_release nogil;
      out = hinm::balanced_kmeans(static_cast<const double*>(x.data), k, size, x.cols, seed, max_iter, tol);
    }
    copy_out(out, labels, "labels");
  }, nb::arg("points"), nb::arg("k"), nb::arg("size"), nb::arg("seed"), nb::arg("max_iter"), nb::arg("tol"),
     nb::arg("labels"));

  m.def("search_permutation", [](InArray scores, int64_t v, int64_t kept, int n, int mm, const std::string& method,
                                 uint64_t seed, double time_budget, std::vector<int> schedule, int ocp_fail_limit,
                                 int icp_fail_limit, int refine_rounds, bool window_search, const std::string& ocp_objective,
                                 int cluster_rounds, int swap_rounds, int64_t anneal_moves,
                                 double anneal_temperature, int anneal_max_tiles, nb::object progress,
                                 OutArray row_perm, OutArray col_orders) {
    auto s = as_matrix(scores, "scores");
    hinm::PermuteOptions opt;
    opt.method = hinm::parse_permute_method(method);
    opt.seed = seed;
    opt.time_budget = time_budget;
    opt.schedule = std::move(schedule);
    opt.ocp_fail_limit = ocp_fail_limit;
    opt.icp_fail_limit = icp_fail_limit;
    opt.refine_rounds = refine_rounds;
    opt.window_search = window_search;
    opt.cluster_rounds = cluster_rounds;
    opt.swap_rounds = swap_rounds;
    opt.anneal_moves = anneal_moves;
    opt.anneal_temperature = anneal_temperature;
    opt.anneal_max_tiles = anneal_max_tiles;
    opt.ocp_vector_objective = ocp_objective == "vector";
    if (ocp_objective != "vector" && ocp_objective != "hinm")
      throw nb::value_error(("ocp_objective: expected 'vector' or 'hinm', got '" + ocp_objective + "'").c_str());
    if (!progress.is_none())
      opt.progress = [progress](const std::string& stage, int64_t step, double retained) {
        nb::gil_scoped_acquire gil;
        progress(stage, step, retained);
      };
    hinm::PermuteResult res;
    {
      nb::gil_scoped_release nogil;
      res = hinm::search_permutation(s, v, kept, {n, mm}, opt);
    }
    copy_out(res.row_perm, row_perm, "row_perm");
    copy_out(res.col_orders, col_orders, "col_orders");
    std::vector<std::tuple<std::string, double, double>> history;
    for (const auto& h : res.history) history.emplace_back(h.stage, h.retained, h.seconds);
    return std::make_tuple(res.retained, history);
  }, nb::arg("scores"), nb::arg("v"), nb::arg("kept"), nb::arg("n"), nb::arg("m"), nb::arg("method"),
     nb::arg("seed"), nb::arg("time_budget"), nb::arg("schedule"), nb::arg("ocp_fail_limit"),
     nb::arg("icp_fail_limit"), nb::arg("refine_rounds"), nb::arg("window_search"), nb::arg("ocp_objective"),
     nb::arg("cluster_rounds"), nb::arg("swap_rounds"), nb::arg("anneal_moves"),
     nb::arg("anneal_temperature"), nb::arg("anneal_max_tiles"), nb::arg("progress").none(),
     nb::arg("row_perm"), nb::arg("col_orders"));

  m.def("permutation_retained", [](InArray scores, int64_t v, int64_t kept, int n, int mm, InArray row_perm,
                                   InArray col_orders) {
    auto s = as_matrix(scores, "scores");
    auto rp = as_matrix(row_perm, "row_perm");
    auto co = as_matrix(col_orders, "col_orders");
    hinm::require(rp, "row_perm", hinm::DType::i64);
    hinm::require(co, "col_orders", hinm::DType::i64);
    std::vector<int64_t> r(rp.row<int64_t>(0), rp.row<int64_t>(0) + rp.rows * rp.cols);
    std::vector<int64_t> c(co.rows * co.cols);
    for (int64_t i = 0; i < co.rows; ++i) std::copy(co.row<int64_t>(i), co.row<int64_t>(i) + co.cols, c.begin() + i * co.cols);
    nb::gil_scoped_release nogil;
    return hinm::hinm_retained(s, v, kept, {n, mm}, r, c);
  }, nb::arg("scores"), nb::arg("v"), nb::arg("kept"), nb::arg("n"), nb::arg("m"), nb::arg("row_perm"),
     nb::arg("col_orders"));
}
