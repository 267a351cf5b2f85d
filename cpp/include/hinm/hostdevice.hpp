// Marks functions that both host code and CUDA kernels call (index math shared by the CPU
// emulation tests and the device code).
#pragma once

#if defined(__CUDACC__)
#define HINM_HD __host__ __device__ __forceinline__
#else
#define HINM_HD inline
#endif
