// Bias-act and its VJP over [n, c, hw] rows: one warp per (n, c) row, lanes striding over hw,
// so reductions over a row are a warp sum and every access is coalesced.
#pragma once

#include "epilogue.cuh"

namespace ilo {

constexpr int kRowWarps = 8;  // rows per 256-thread block

template <class T>
__global__ void bias_act_kernel(IloBiasActArgs a) {
    const int lane = threadIdx.x % 32;
    const int64_t row = int64_t(blockIdx.x) * kRowWarps + threadIdx.x / 32;
    const bool live = row < int64_t(a.n) * a.c;
    const int n = live ? int(row / a.c) : 0, c = live ? int(row % a.c) : 0;
    float part = 0.f;
    if (live) {
        for (int64_t p = lane; p < a.hw; p += 32) {
            const float v = load(static_cast<const T*>(a.x), row * a.hw + p);
            store(static_cast<T*>(a.y), row * a.hw + p, epilogue<T>(a.ep, n, c, a.c, p, a.hw, v));
            part += reduce_term<T>(a.ep, row, a.hw, p, v);
        }
    }
    if (a.ep.reduce_out) {  // the whole warp takes part in the shuffle, live or not
        part = warp_sum(part);
        if (live && lane == 0) a.ep.reduce_out[row] += part;
    }
}

template <class T>
__global__ void act_grad_rows_kernel(IloActGradArgs a) {
    const int lane = threadIdx.x % 32;
    const int64_t row = int64_t(blockIdx.x) * kRowWarps + threadIdx.x / 32;
    const bool live = row < int64_t(a.n) * a.c;
    const float scale = (live && a.scale) ? a.scale[row] : 1.f;
    float part = 0.f;
    if (live) {
        for (int64_t p = lane; p < a.hw; p += 32) {
            const int64_t i = row * a.hw + p;
            const float g = activation_grad(load(static_cast<const T*>(a.dy), i), load(static_cast<const T*>(a.y), i),
                                            a.alpha, a.gain, a.clamp);
            if (a.dx) store(static_cast<T*>(a.dx), i, g * scale);
            if (a.row_sum) part += a.ref ? g * load(static_cast<const T*>(a.ref), i) : g;
        }
    }
    if (a.row_sum) {
        part = warp_sum(part);
        if (live && lane == 0) a.row_sum[row] = part;
    }
}

// channel_sum[n, p] = sum_c g[n, c, p]: one thread per (n, p), adjacent threads adjacent p.
template <class T>
__global__ void act_grad_channel_sum_kernel(IloActGradArgs a) {
    const int64_t p = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    const int n = blockIdx.y;
    if (p >= a.hw) return;
    float sum = 0.f;
    for (int c = 0; c < a.c; ++c) {
        const int64_t i = (int64_t(n) * a.c + c) * a.hw + p;
        sum += activation_grad(load(static_cast<const T*>(a.dy), i), load(static_cast<const T*>(a.y), i), a.alpha,
                               a.gain, a.clamp);
    }
    a.channel_sum[int64_t(n) * a.hw + p] = sum;
}

}  // namespace ilo
