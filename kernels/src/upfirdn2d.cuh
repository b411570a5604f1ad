// upfirdn2d and its exact adjoint, one thread per output sample of a plane, the filter in
// shared memory. The taps StyleGAN2 uses are 4x4 (2x up/down with [1,3,3,1]); both gather,
// so neither needs atomics.
#pragma once

#include "epilogue.cuh"

namespace ilo {

constexpr int kMaxTaps = 16;  // per axis

template <class T>
__global__ void upfirdn2d_kernel(IloUpfirdnArgs a) {
    __shared__ float taps[kMaxTaps * kMaxTaps];
    for (int i = threadIdx.x; i < a.fh * a.fw; i += blockDim.x) taps[i] = a.filter[i];
    __syncthreads();

    const int plane = blockIdx.y + blockIdx.z * gridDim.y;  // n * c + channel (grid y is capped at 65535)
    const int out_h = a.adjoint ? a.hi : a.ho, out_w = a.adjoint ? a.wi : a.wo;
    const int in_h = a.adjoint ? a.ho : a.hi, in_w = a.adjoint ? a.wo : a.wi;
    const int64_t p = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    const bool live = p < int64_t(out_h) * out_w && plane < a.n * a.c;
    const T* x = static_cast<const T*>(a.x) + int64_t(plane) * in_h * in_w;
    float acc = 0.f;
    if (live) {
        const int oy = int(p / out_w), ox = int(p % out_w);
        if (!a.adjoint) {
            // y[oy, ox] = sum_{ty, tx} f[ty, tx] * U[oy*down + ty - pad0, ...], U = x zero-inserted by `up`
            for (int ty = 0; ty < a.fh; ++ty) {
                const int uy = oy * a.down + ty - a.pad0;
                if (uy < 0 || uy % a.up || uy / a.up >= a.hi) continue;
                for (int tx = 0; tx < a.fw; ++tx) {
                    const int ux = ox * a.down + tx - a.pad0;
                    if (ux < 0 || ux % a.up || ux / a.up >= a.wi) continue;
                    acc += taps[ty * a.fw + tx] * load(x, int64_t(uy / a.up) * a.wi + ux / a.up);
                }
            }
        } else {
            // The transpose: input sample (oy, ox) sits at u = oy*up + pad0 and feeds every output
            // t with t*down + tap = u, 0 <= tap < f.
            const int uy = oy * a.up + a.pad0, ux = ox * a.up + a.pad0;
            const int ty0 = max(0, floor_div(uy - a.fh + 1 + a.down - 1, a.down)), ty1 = min(a.ho - 1, floor_div(uy, a.down));
            const int tx0 = max(0, floor_div(ux - a.fw + 1 + a.down - 1, a.down)), tx1 = min(a.wo - 1, floor_div(ux, a.down));
            for (int ty = ty0; ty <= ty1; ++ty)
                for (int tx = tx0; tx <= tx1; ++tx)
                    acc += taps[(uy - ty * a.down) * a.fw + (ux - tx * a.down)] * load(x, int64_t(ty) * a.wo + tx);
        }
    }
    const int channels = a.c;
    const int n = plane / channels, c = plane % channels;  // (n may be out of range where !live)
    float part = 0.f;
    if (live) {
        const int64_t hw = int64_t(out_h) * out_w;
        store(static_cast<T*>(a.y), int64_t(plane) * hw + p, epilogue<T>(a.ep, n, c, channels, p, hw, acc));
        part = reduce_term<T>(a.ep, plane, hw, p, acc);
    }
    if (a.ep.reduce_out) {
        part = warp_sum(part);
        if (threadIdx.x % 32 == 0 && part != 0.f) atomicAdd(a.ep.reduce_out + plane, part);
    }
}

}  // namespace ilo
