// What this build of the library contains, and what the machine running it offers.
#pragma once

#include <string>

namespace hinm {

std::string version();
bool built_with_cuda();
// Compiled CUDA architectures, e.g. "80-real;90a-real;80-virtual"; empty without CUDA.
std::string cuda_architectures();
// Number of visible CUDA devices; 0 without CUDA, without a driver or without a GPU (never throws).
int cuda_device_count();
// One line per visible device ("0: NVIDIA H100 (sm_90)"); empty when there is none.
std::string cuda_device_summary();
// "avx512", "avx2" or "generic": the widest CPU kernel variant this machine runs.
std::string cpu_isa();

}  // namespace hinm
