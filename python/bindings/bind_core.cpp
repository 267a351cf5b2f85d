#include "common.hpp"
#include "hinm/build_info.hpp"
#include "hinm/parallel.hpp"

void bind_core(nb::module_& m) {
  m.def("version", &hinm::version);
  m.def("built_with_cuda", &hinm::built_with_cuda);
  m.def("cuda_architectures", &hinm::cuda_architectures);
  m.def("cuda_device_count", &hinm::cuda_device_count);
  m.def("cuda_device_summary", &hinm::cuda_device_summary);
  m.def("cpu_isa", &hinm::cpu_isa);
  m.def("set_num_threads", &hinm::set_num_threads, nb::arg("n"));
  m.def("get_num_threads", &hinm::get_num_threads);
}
