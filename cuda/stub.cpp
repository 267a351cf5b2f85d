// Compiled instead of cuda/src/*.cu when the library is built without CUDA.
#include "hinm/build_info.hpp"

namespace hinm {

bool built_with_cuda() { return false; }
std::string cuda_architectures() { return ""; }
int cuda_device_count() { return 0; }
std::string cuda_device_summary() { return ""; }

}  // namespace hinm
