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

#if defined(__CUDACC__)
#define ILO_UNROLL _Pragma("unroll")
#else
#define ILO_UNROLL
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

// Round to TF32 (10-bit mantissa), to nearest with ties away from zero: the tensor cores' input.
#if defined(__CUDACC__)
__device__ __forceinline__ float to_tf32(float v) {
#if __CUDA_ARCH__ >= 800
    uint32_t r;
    asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(v));
    return __uint_as_float(r);
#else
    return v;  // never reached: no tensor-core kernel runs below sm_80
#endif
}

// d += A * B for one warp's 16x8x8 TF32 tile; fragment layouts as in conv_mma_kernel.
__device__ __forceinline__ void mma_tf32_m16n8k8(float d[4], const float a[4], const float b[2]) {
#if __CUDA_ARCH__ >= 800
    asm volatile(
        "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(__float_as_uint(a[0])), "r"(__float_as_uint(a[1])), "r"(__float_as_uint(a[2])), "r"(__float_as_uint(a[3])),
          "r"(__float_as_uint(b[0])), "r"(__float_as_uint(b[1])));
#else
    __trap();  // the host side never launches the tensor-core kernel below sm_80
#endif
}
#else
inline float to_tf32(float v) {
    if (!std::isfinite(v)) return v;
    uint32_t bits;
    std::memcpy(&bits, &v, 4);
    bits = (bits + 0x1000u) & ~0x1fffu;  // sign-magnitude: adding half an ulp rounds ties away
    std::memcpy(&v, &bits, 4);
    return v;
}
inline void mma_tf32_m16n8k8(float d[4], const float a[4], const float b[2]) { ilo_emu::mma_tf32_m16n8k8(d, a, b); }
#endif

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
