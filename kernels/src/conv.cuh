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
// inner loop is a plain GEMM: each thread owns 4 channels x 4 adjacent pixels and reads them
// as two 16-byte vectors per k.

#pragma once

#include "epilogue.cuh"

namespace ilo {

template <int K, int TC, int TPY, int TPX, int CK>
struct ConvTile {
    static constexpr int kTaps = K * K;
    static constexpr int kDepth = CK * kTaps;  // GEMM k per chunk
    static constexpr int kPixels = TPY * TPX;
    static constexpr int kPixelGroups = kPixels / 4;
    static constexpr int kThreads = (TC / 4) * kPixelGroups;
    static_assert(TPX % 4 == 0 && TC % 4 == 0, "threads own 4 x 4 sub-tiles");
};

struct alignas(16) Vec4 {
    float v[4];
};

template <class T, int K, int TC, int TPY, int TPX, int CK>
__global__ void conv_kernel(IloConvArgs a) {
    using Tile = ConvTile<K, TC, TPY, TPX, CK>;
    alignas(16) __shared__ float wt[Tile::kDepth][TC];
    alignas(16) __shared__ float bt[Tile::kDepth][Tile::kPixels];

    const int tid = threadIdx.x;
    const int tiles_x = (a.wo + TPX - 1) / TPX;
    const int oy0 = (blockIdx.x / tiles_x) * TPY, ox0 = (blockIdx.x % tiles_x) * TPX;
    const int co0 = blockIdx.y * TC, n = blockIdx.z;
    const int cg = tid / Tile::kPixelGroups, pg = tid % Tile::kPixelGroups;
    const int py = pg / (TPX / 4), px = (pg % (TPX / 4)) * 4;  // this thread's row and first column
    const int oy = oy0 + py;

    const T* x = static_cast<const T*>(a.x) + int64_t(n) * a.ci * a.hi * a.wi;
    const float* scale = a.in_scale ? a.in_scale + int64_t(n) * a.ci : nullptr;
    float acc[4][4] = {};

    for (int c0 = 0; c0 < a.ci; c0 += CK) {
        for (int i = tid; i < Tile::kDepth * TC; i += Tile::kThreads) {
            // tap fastest, then input channel: consecutive threads read consecutive weights
            const int k = i % Tile::kDepth, ol = i / Tile::kDepth;
            const int ci = c0 + k / Tile::kTaps, co = co0 + ol;
            wt[k][ol] = (ci < a.ci && co < a.co) ? a.weight[(int64_t(co) * a.ci + ci) * Tile::kTaps + k % Tile::kTaps] : 0.f;
        }
        for (int i = tid; i < Tile::kDepth * Tile::kPixels; i += Tile::kThreads) {
            const int k = i / Tile::kPixels, p = i % Tile::kPixels;
            const int ci = c0 + k / Tile::kTaps, ky = (k % Tile::kTaps) / K, kx = k % K;
            const int y = oy0 + p / TPX, xo = ox0 + p % TPX;  // the output pixel
            int iy, ix;
            bool inside = ci < a.ci;
            if (a.transposed) {  // y = iy * stride + ky - pad
                const int ty = y + a.pad - ky, tx = xo + a.pad - kx;
                iy = floor_div(ty, a.stride);
                ix = floor_div(tx, a.stride);
                inside = inside && iy * a.stride == ty && ix * a.stride == tx;
            } else {
                iy = y * a.stride + ky - a.pad;
                ix = xo * a.stride + kx - a.pad;
            }
            inside = inside && iy >= 0 && iy < a.hi && ix >= 0 && ix < a.wi;
            float v = 0.f;
            if (inside) {
                v = load(x, (int64_t(ci) * a.hi + iy) * a.wi + ix);
                if (scale) v *= scale[ci];
            }
            bt[k][p] = v;
        }
        __syncthreads();

        for (int k = 0; k < Tile::kDepth; ++k) {
            const Vec4 w = *reinterpret_cast<const Vec4*>(&wt[k][cg * 4]);
            const Vec4 v = *reinterpret_cast<const Vec4*>(&bt[k][pg * 4]);
            for (int j = 0; j < 4; ++j)
                for (int q = 0; q < 4; ++q) acc[j][q] += w.v[j] * v.v[q];
        }
        __syncthreads();
    }
    const int64_t hw = int64_t(a.ho) * a.wo;
    for (int j = 0; j < 4; ++j) {
        const int co = co0 + cg * 4 + j;
        float part = 0.f;
        if (co < a.co && oy < a.ho) {
            for (int q = 0; q < 4; ++q) {
                const int ox = ox0 + px + q;
                if (ox >= a.wo) continue;
                const int64_t p = int64_t(oy) * a.wo + ox;
                store(static_cast<T*>(a.y), (int64_t(n) * a.co + co) * hw + p,
                      epilogue<T>(a.ep, n, co, a.co, p, hw, acc[j][q]));
                part += reduce_term<T>(a.ep, int64_t(n) * a.co + co, hw, p, acc[j][q]);
            }
        }
        if (a.ep.reduce_out) {  // lanes holding the same channel are adjacent pixel groups
            constexpr int width = Tile::kPixelGroups < 32 ? Tile::kPixelGroups : 32;
            part = lane_group_sum(part, width);
            if (tid % width == 0 && co < a.co && part != 0.f) atomicAdd(a.ep.reduce_out + int64_t(n) * a.co + co, part);
        }
    }
}

}  // namespace ilo
