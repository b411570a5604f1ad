// Modulated convolution as an implicit GEMM with a fused epilogue: the style scales the input
// as it is gathered into shared memory, and demodulation, noise, bias, activation and clamp are
// applied to the accumulators before the single store, so a StyleGAN2 layer reads its input
// once and writes its output once (torch's scale -> conv -> scale form makes three passes over
// memory, its grouped form rebuilds per-sample weights).
//
// A block computes a TC (output channels) x TPY x TPX (output pixels) tile of one sample. For
// each chunk of CK input channels it gathers the chunk's weights, wt[k][co], and the
// style-scaled input under every tap, bt[k][pixel] (im2col, k = channel x tap), into shared
// memory; every stride, padding and transposed-conv case is resolved in that gather, so the
// inner loop is a plain GEMM. Two of them:
//   conv_kernel      fp32 on the CUDA cores, each thread 4 channels x 4 adjacent pixels read as
//                    two 16-byte vectors per k: float32-exact (TF32 off);
//   conv_mma_kernel  TF32 tensor cores (mma.sync m16n8k8, sm_80+), each warp a 32 x 32 tile:
//                    what torch's convolutions do by default (cudnn.allow_tf32).

#pragma once

#include "epilogue.cuh"

namespace ilo {

template <int K, int TC, int TPY, int TPX, int CK>
struct ConvTile {
    static constexpr int kTaps = K * K;
    static constexpr int kDepth = CK * kTaps;  // GEMM k per chunk
    static constexpr int kPixels = TPY * TPX;
    static constexpr int kPixelGroups = kPixels / 4;
    static constexpr int kThreads = (TC / 4) * kPixelGroups;  // the SIMT kernel's
    // Shared rows padded by 4 floats: 16-byte aligned, and the tensor-core fragment reads
    // (rows t, columns g of a warp's 4 x 8 lanes) fall in 32 different banks.
    static constexpr int kWStride = TC + 4;
    static constexpr int kBStride = kPixels + 4;
    static_assert(TPX % 4 == 0 && TC % 4 == 0, "threads own 4 x 4 sub-tiles");
};

struct alignas(16) Vec4 {
    float v[4];
};

// Where each (tap, output pixel) of the block's tile reads in an input channel plane, or -1
// (padding, or no input sample under a transposed conv's tap): every stride, padding and
// transposed case is resolved here, once per block, so the per-chunk gather is a table lookup.
template <class Tile, int TPX>
__device__ __forceinline__ void build_offsets(const IloConvArgs& a, int* offsets, int oy0, int ox0, int tid, int threads) {
    constexpr int K = Tile::kTaps == 9 ? 3 : 1;
    for (int i = tid; i < Tile::kTaps * Tile::kPixels; i += threads) {
        const int tap = i / Tile::kPixels, p = i % Tile::kPixels;
        const int ky = tap / K, kx = tap % K;
        const int y = oy0 + p / TPX, xo = ox0 + p % TPX;  // the output pixel
        int iy, ix;
        bool inside = true;
        if (a.transposed) {  // y = iy * stride + ky - pad
            const int ty = y + a.pad - ky, tx = xo + a.pad - kx;
            iy = floor_div(ty, a.stride);
            ix = floor_div(tx, a.stride);
            inside = iy * a.stride == ty && ix * a.stride == tx;
        } else {
            iy = y * a.stride + ky - a.pad;
            ix = xo * a.stride + kx - a.pad;
        }
        inside = inside && iy >= 0 && iy < a.hi && ix >= 0 && ix < a.wi;
        offsets[i] = inside ? iy * a.wi + ix : -1;
    }
}

// Gathers input-channel chunk c0 into shared memory: wt[k][co] (weights) and bt[k][pixel]
// (the style-scaled input under tap k of each output pixel, zero outside the image), with
// k = channel * taps + tap. Values are rounded to TF32 for the tensor-core kernel.
template <class T, class Tile, int TC, bool kTf32>
__device__ __forceinline__ void stage_chunk(const IloConvArgs& a, float* wt, float* bt, const int* offsets, int c0, int co0,
                                            const T* x, const float* scale, int tid, int threads) {
    for (int i = tid; i < Tile::kDepth * TC; i += threads) {
        // tap fastest, then input channel: consecutive threads read consecutive weights
        const int k = i % Tile::kDepth, ol = i / Tile::kDepth;
        const int ci = c0 + k / Tile::kTaps, co = co0 + ol;
        const float w = (ci < a.ci && co < a.co) ? a.weight[(int64_t(co) * a.ci + ci) * Tile::kTaps + k % Tile::kTaps] : 0.f;
        wt[k * Tile::kWStride + ol] = kTf32 ? to_tf32(w) : w;
    }
    constexpr int kPlane = Tile::kTaps * Tile::kPixels;  // (tap, pixel) pairs of one channel
    const int64_t hw = int64_t(a.hi) * a.wi;
    for (int i = tid; i < Tile::kDepth * Tile::kPixels; i += threads) {
        const int cl = i / kPlane, rest = i % kPlane;  // rest = tap * pixels + pixel = the bt row offset
        const int ci = c0 + cl, offset = offsets[rest];
        float v = 0.f;
        if (ci < a.ci && offset >= 0) {
            v = load(x, ci * hw + offset);
            if (scale) v *= scale[ci];
        }
        const int k = cl * Tile::kTaps + rest / Tile::kPixels, p = rest % Tile::kPixels;
        bt[k * Tile::kBStride + p] = kTf32 ? to_tf32(v) : v;
    }
}

// Runs the epilogue on accumulator v of output (n, co, oy, ox) and stores it; returns its share
// of the reduction (0 outside the output).
template <class T>
__device__ __forceinline__ float finish(const IloConvArgs& a, int n, int co, int oy, int ox, float v) {
    if (co >= a.co || oy >= a.ho || ox >= a.wo) return 0.f;
    const int64_t hw = int64_t(a.ho) * a.wo, p = int64_t(oy) * a.wo + ox, nc = int64_t(n) * a.co + co;
    store(static_cast<T*>(a.y), nc * hw + p, epilogue<T>(a.ep, n, co, a.co, p, hw, v));
    return reduce_term<T>(a.ep, nc, hw, p, v);
}

// Adds a lane group's reduction shares into reduce_out[n, co], once per group.
__device__ __forceinline__ void reduce_channel(const IloConvArgs& a, int n, int co, float part, int width, int lane) {
    if (!a.ep.reduce_out) return;
    part = lane_group_sum(part, width);  // every lane of the warp takes part
    if (lane % width == 0 && co < a.co && part != 0.f) atomicAdd(a.ep.reduce_out + int64_t(n) * a.co + co, part);
}

template <class T, int K, int TC, int TPY, int TPX, int CK>
__global__ void conv_kernel(IloConvArgs a) {
    using Tile = ConvTile<K, TC, TPY, TPX, CK>;
    alignas(16) __shared__ float wt[Tile::kDepth * Tile::kWStride];
    alignas(16) __shared__ float bt[Tile::kDepth * Tile::kBStride];
    __shared__ int offsets[Tile::kTaps * Tile::kPixels];

    const int tid = threadIdx.x;
    const int tiles_x = (a.wo + TPX - 1) / TPX;
    const int oy0 = (blockIdx.x / tiles_x) * TPY, ox0 = (blockIdx.x % tiles_x) * TPX;
    const int co0 = blockIdx.y * TC, n = blockIdx.z;
    const int cg = tid / Tile::kPixelGroups, pg = tid % Tile::kPixelGroups;
    const int py = pg / (TPX / 4), px = (pg % (TPX / 4)) * 4;  // this thread's row and first column

    const T* x = static_cast<const T*>(a.x) + int64_t(n) * a.ci * a.hi * a.wi;
    const float* scale = a.in_scale ? a.in_scale + int64_t(n) * a.ci : nullptr;
    float acc[4][4] = {};
    build_offsets<Tile, TPX>(a, offsets, oy0, ox0, tid, Tile::kThreads);
    __syncthreads();

    for (int c0 = 0; c0 < a.ci; c0 += CK) {
        stage_chunk<T, Tile, TC, false>(a, wt, bt, offsets, c0, co0, x, scale, tid, Tile::kThreads);
        __syncthreads();
        ILO_UNROLL
        for (int k = 0; k < Tile::kDepth; ++k) {
            const Vec4 w = *reinterpret_cast<const Vec4*>(&wt[k * Tile::kWStride + cg * 4]);
            const Vec4 v = *reinterpret_cast<const Vec4*>(&bt[k * Tile::kBStride + pg * 4]);
            ILO_UNROLL
            for (int j = 0; j < 4; ++j)
                ILO_UNROLL
                for (int q = 0; q < 4; ++q) acc[j][q] += w.v[j] * v.v[q];
        }
        __syncthreads();
    }

    // lanes holding the same channel are adjacent pixel groups
    constexpr int width = Tile::kPixelGroups < 32 ? Tile::kPixelGroups : 32;
    ILO_UNROLL
    for (int j = 0; j < 4; ++j) {
        const int co = co0 + cg * 4 + j;
        float part = 0.f;
        ILO_UNROLL
        for (int q = 0; q < 4; ++q) part += finish<T>(a, n, co, oy0 + py, ox0 + px + q, acc[j][q]);
        reduce_channel(a, n, co, part, width, tid % 32);
    }
}

// 64 channels x 8 x 8 pixels per block, 4 warps of 32 x 32: per k-step of 8 each warp issues
// 2 (channel) x 4 (pixel row) mma.m16n8k8. Fragment layouts are PTX's for .tf32:
//   A 16x8 (channels x k): a0 (g, t), a1 (g+8, t), a2 (g, t+4), a3 (g+8, t+4)
//   B 8x8 (k x pixels):    b0 (t, g), b1 (t+4, g)
//   C 16x8:                c0 (g, 2t), c1 (g, 2t+1), c2 (g+8, 2t), c3 (g+8, 2t+1)
// with g = lane / 4, t = lane % 4.
template <class T, int K, int CK>
__global__ void conv_mma_kernel(IloConvArgs a) {
    constexpr int TC = 64, TPY = 8, TPX = 8, kThreads = 128;
    using Tile = ConvTile<K, TC, TPY, TPX, CK>;
    static_assert(Tile::kDepth % 8 == 0, "k-steps of 8");
    alignas(16) __shared__ float wt[Tile::kDepth * Tile::kWStride];
    alignas(16) __shared__ float bt[Tile::kDepth * Tile::kBStride];
    __shared__ int offsets[Tile::kTaps * Tile::kPixels];

    const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
    const int g = lane / 4, t = lane % 4;
    const int tiles_x = (a.wo + TPX - 1) / TPX;
    const int oy0 = (blockIdx.x / tiles_x) * TPY, ox0 = (blockIdx.x % tiles_x) * TPX;
    const int co0 = blockIdx.y * TC, n = blockIdx.z;
    const int wm = (warp / 2) * 32, wn = (warp % 2) * 32;  // the warp's channel and pixel offsets

    const T* x = static_cast<const T*>(a.x) + int64_t(n) * a.ci * a.hi * a.wi;
    const float* scale = a.in_scale ? a.in_scale + int64_t(n) * a.ci : nullptr;
    float acc[2][4][4] = {};
    build_offsets<Tile, TPX>(a, offsets, oy0, ox0, tid, kThreads);
    __syncthreads();

    for (int c0 = 0; c0 < a.ci; c0 += CK) {
        stage_chunk<T, Tile, TC, true>(a, wt, bt, offsets, c0, co0, x, scale, tid, kThreads);
        __syncthreads();
        ILO_UNROLL
        for (int k0 = 0; k0 < Tile::kDepth; k0 += 8) {
            float fa[2][4], fb[4][2];
            ILO_UNROLL
            for (int mt = 0; mt < 2; ++mt) {
                const int m = wm + mt * 16 + g;
                fa[mt][0] = wt[(k0 + t) * Tile::kWStride + m];
                fa[mt][1] = wt[(k0 + t) * Tile::kWStride + m + 8];
                fa[mt][2] = wt[(k0 + t + 4) * Tile::kWStride + m];
                fa[mt][3] = wt[(k0 + t + 4) * Tile::kWStride + m + 8];
            }
            ILO_UNROLL
            for (int nt = 0; nt < 4; ++nt) {
                const int p = wn + nt * 8 + g;
                fb[nt][0] = bt[(k0 + t) * Tile::kBStride + p];
                fb[nt][1] = bt[(k0 + t + 4) * Tile::kBStride + p];
            }
            ILO_UNROLL
            for (int mt = 0; mt < 2; ++mt)
                ILO_UNROLL
                for (int nt = 0; nt < 4; ++nt) mma_tf32_m16n8k8(acc[mt][nt], fa[mt], fb[nt]);
        }
        __syncthreads();
    }

    // Pixel tile row = (wn + nt * 8) / 8, column = 2t + (i & 1); channel = wm + mt*16 + g (+8).
    ILO_UNROLL
    for (int mt = 0; mt < 2; ++mt)
        ILO_UNROLL
        for (int half = 0; half < 2; ++half) {
            const int co = co0 + wm + mt * 16 + g + half * 8;
            float part = 0.f;
            ILO_UNROLL
            for (int nt = 0; nt < 4; ++nt)
                ILO_UNROLL
                for (int j = 0; j < 2; ++j)
                    part += finish<T>(a, n, co, oy0 + wn / 8 + nt, ox0 + 2 * t + j, acc[mt][nt][half * 2 + j]);
            reduce_channel(a, n, co, part, 4, lane);  // the 4 lanes of group g hold channel co
        }
}

}  // namespace ilo
