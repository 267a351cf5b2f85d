// Compiled instead of cuda/src/*.cu when the library is built without CUDA.
#include <stdexcept>

#include "hinm/build_info.hpp"
#include "hinm/cuda_spmm.hpp"

namespace hinm {

bool built_with_cuda() { return false; }
std::string cuda_architectures() { return ""; }
int cuda_device_count() { return 0; }
std::string cuda_device_summary() { return ""; }

void cuda_hinm_spmm(const HiNMDeviceView&, const void*, int64_t, int64_t, void*, int64_t, const void*, bool, void*) {
  throw std::runtime_error("hinm was built without CUDA");
}

}  // namespace hinm
