// The per-value epilogue every kernel ends with (see IloEpilogue), and the activation's VJP.
#pragma once

#include "ilo_kernels.h"
#include "platform.h"

namespace ilo {

__device__ __forceinline__ float activate(float v, float alpha, float gain, float clamp) {
    v = (v > 0.f ? v : alpha * v) * gain;
    if (clamp >= 0.f) v = fminf(fmaxf(v, -clamp), clamp);
    return v;
}

// Gradient through activate(), read off its output y as StyleGAN2's bias_act does: y > 0
// exactly where the input was, and a clamped value sits on the bound.
__device__ __forceinline__ float activation_grad(float dy, float y, float alpha, float gain, float clamp) {
    if (clamp >= 0.f && !(fabsf(y) < clamp)) return 0.f;
    return dy * gain * (y > 0.f ? 1.f : alpha);
}

// v is the accumulated value at (n, c, p) of a [*, channels, hw] output; returns y's value.
template <class T>
__device__ __forceinline__ float epilogue(const IloEpilogue& ep, int n, int c, int channels, int64_t p, int64_t hw,
                                          float v) {
    const int64_t nc = int64_t(n) * channels + c;
    if (ep.z) store(static_cast<T*>(ep.z), nc * hw + p, v);
    if (ep.scale) v *= ep.scale[nc];
    if (ep.noise) v += load(static_cast<const T*>(ep.noise), n * ep.noise_batch_stride + p);
    if (ep.bias) v += ep.bias[c];
    return activate(v, ep.alpha, ep.gain, ep.clamp);
}

// This value's share of reduce_out[n, c]: the raw accumulator times the reference.
template <class T>
__device__ __forceinline__ float reduce_term(const IloEpilogue& ep, int64_t nc, int64_t hw, int64_t p, float raw) {
    return ep.reduce_out ? raw * load(static_cast<const T*>(ep.reduce_ref), nc * hw + p) : 0.f;
}

// Sum over groups of `width` adjacent lanes (a power of two <= 32); every lane gets its group's sum.
__device__ __forceinline__ float lane_group_sum(float v, int width) {
    for (int m = width / 2; m > 0; m >>= 1) v += __shfl_xor_sync(0xffffffffu, v, m);
    return v;
}

}  // namespace ilo
