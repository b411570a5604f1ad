// What differs between the CUDA build and the host-emulation build: types, launch, errors.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#define ILO_HAS_HALF 1
#else
#if defined(ILO_EMULATION_HALF)  // the CUDA headers' host-side half types, when they are at hand
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#define ILO_HAS_HALF 1
#else
#define ILO_HAS_HALF 0
#endif
#include "emulation.h"  // after the CUDA headers: its macros would rewrite their declarations
#endif

namespace ilo {

__device__ __forceinline__ float load(const float* p, int64_t i) { return p[i]; }
__device__ __forceinline__ void store(float* p, int64_t i, float v) { p[i] = v; }
#if ILO_HAS_HALF
__device__ __forceinline__ float load(const __half* p, int64_t i) { return __half2float(p[i]); }
__device__ __forceinline__ void store(__half* p, int64_t i, float v) { p[i] = __float2half_rn(v); }
__device__ __forceinline__ float load(const __nv_bfloat16* p, int64_t i) { return __bfloat162float(p[i]); }
__device__ __forceinline__ void store(__nv_bfloat16* p, int64_t i, float v) { p[i] = __float2bfloat16_rn(v); }
#endif

// Sum over the 32 lanes of a warp; every lane gets the total.
__device__ __forceinline__ float warp_sum(float v) {
    for (int m = 16; m > 0; m >>= 1) v += __shfl_xor_sync(0xffffffffu, v, m);
    return v;
}

__host__ __device__ __forceinline__ int floor_div(int a, int b) { return (a >= 0) ? a / b : -((-a + b - 1) / b); }

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Launches `kernel` on `stream`; returns false (and records why) when the launch failed.
bool launch_failed(const char* what);

#if defined(__CUDACC__)
template <class Kernel, class... Args>
bool launch(const char* what, Kernel kernel, dim3 grid, dim3 block, void* stream, Args... args) {
    kernel<<<grid, block, 0, static_cast<cudaStream_t>(stream)>>>(args...);
    return !launch_failed(what);
}
#else
template <class Kernel, class... Args>
bool launch(const char*, Kernel kernel, dim3 grid, dim3 block, void*, Args... args) {
    ilo_emu::launch(kernel, grid, block, args...);
    return true;
}
#endif

}  // namespace ilo
