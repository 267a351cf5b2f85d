// Build and device facts for CUDA builds. Uses only the runtime API (static cudart), so the library
// loads on machines without a driver: every query then reports zero devices.
#include <cuda_runtime.h>

#include <string>

#include "hinm/build_info.hpp"
#include "hinm_build_config.hpp"

namespace hinm {

bool built_with_cuda() { return true; }

std::string cuda_architectures() { return HINM_CUDA_ARCHS; }

int cuda_device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver" error
    return 0;
  }
  return n;
}

std::string cuda_device_summary() {
  std::string out;
  const int n = cuda_device_count();
  for (int d = 0; d < n; ++d) {
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, d) != cudaSuccess) continue;
    out += std::to_string(d) + ": " + prop.name + " (sm_" + std::to_string(prop.major) + std::to_string(prop.minor) +
           ", " + std::to_string(prop.totalGlobalMem >> 20) + " MiB)\n";
  }
  return out;
}

}  // namespace hinm
