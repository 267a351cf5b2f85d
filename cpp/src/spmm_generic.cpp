// The portable kernels, compiled for the baseline target and once more for AVX2+FMA (the same
// source; the compiler vectorises the batch-lane loops).
#include <stdexcept>
#include <vector>

#include "hinm/dispatch.hpp"
#include "spmm_kernels.hpp"

namespace hinm::detail {

namespace generic {
#include "spmm_generic_body.inc"
}  // namespace generic

const SpmmKernels& kernels_generic() {
  static const SpmmKernels k{"generic", generic::panel, generic::rows, generic::to_f32, generic::offsets, false};
  return k;
}

#if defined(__x86_64__) || defined(__i386__)
#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace avx2 {
#include "spmm_generic_body.inc"
}  // namespace avx2
#pragma GCC pop_options

const SpmmKernels& kernels_avx2() {
  static const SpmmKernels k{"avx2", avx2::panel, avx2::rows, avx2::to_f32, avx2::offsets, false};
  return k;
}
#else
const SpmmKernels& kernels_avx2() { return kernels_generic(); }
#endif

}  // namespace hinm::detail
