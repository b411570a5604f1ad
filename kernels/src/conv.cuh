// Modulated direct convolution with a fused epilogue: the style scales the input as it is staged
// into shared memory and demodulation, noise, bias, activation and clamp are applied to the
// accumulators before the single store, so a StyleGAN2 layer reads its input once and writes
// its output once (the scale -> conv -> scale form of torch makes three passes, the grouped form
// rebuilds per-sample weights).
//
// A block computes a TC (output channels) x TPY x TPX (output pixels) tile of one sample,
// stepping over the input channels CK at a time; each thread owns 4 channels x 4 adjacent
// pixels of the tile in registers.
#pragma once

#include "epilogue.cuh"

namespace ilo {

template <int K, int S, int TC, int TPY, int TPX, int CK>
struct ConvTile {
    static constexpr int kTaps = K * K;
    static constexpr int kPixelGroups = TPY * TPX / 4;
    static constexpr int kThreads = (TC / 4) * kPixelGroups;
    static constexpr int kPatchH = (TPY - 1) * S + K;  // S: the largest stride (or transposed stride) served
    static constexpr int kPatchW = (TPX - 1) * S + K;
    static_assert(TPX % 4 == 0 && TC % 4 == 0, "threads own 4 x 4 sub-tiles");
};

template <class T, int K, int S, int TC, int TPY, int TPX, int CK>
__global__ void conv_kernel(IloConvArgs a) {
    using Tile = ConvTile<K, S, TC, TPY, TPX, CK>;
    __shared__ float patch[CK][Tile::kPatchH][Tile::kPatchW];
    __shared__ float wtile[CK][Tile::kTaps][TC];

    const int tid = threadIdx.x;
    const int tiles_x = (a.wo + TPX - 1) / TPX;
    const int oy0 = (blockIdx.x / tiles_x) * TPY, ox0 = (blockIdx.x % tiles_x) * TPX;
    const int co0 = blockIdx.y * TC, n = blockIdx.z;
    const int cg = tid / Tile::kPixelGroups, pg = tid % Tile::kPixelGroups;
    const int py = pg / (TPX / 4), px = (pg % (TPX / 4)) * 4;  // this thread's row and first column
    const int oy = oy0 + py;

    // Where the patch starts in the input, and how output (row, tap) maps into it.
    const int iy0 = a.transposed ? floor_div(oy0 + a.pad - (K - 1), a.stride) : oy0 * a.stride - a.pad;
    const int ix0 = a.transposed ? floor_div(ox0 + a.pad - (K - 1), a.stride) : ox0 * a.stride - a.pad;
    const int patch_h = a.transposed ? floor_div(oy0 + TPY - 1 + a.pad, a.stride) - iy0 + 1 : (TPY - 1) * a.stride + K;
    const int patch_w = a.transposed ? floor_div(ox0 + TPX - 1 + a.pad, a.stride) - ix0 + 1 : (TPX - 1) * a.stride + K;

    const T* x = static_cast<const T*>(a.x) + int64_t(n) * a.ci * a.hi * a.wi;
    float acc[4][4] = {};

    for (int c0 = 0; c0 < a.ci; c0 += CK) {
        // Stage the style-scaled input patch (zero outside the image) and the weights.
        for (int i = tid; i < CK * patch_h * patch_w; i += Tile::kThreads) {
            const int cl = i / (patch_h * patch_w), r = (i / patch_w) % patch_h, q = i % patch_w;
            const int ci = c0 + cl, iy = iy0 + r, ix = ix0 + q;
            float v = 0.f;
            if (ci < a.ci && iy >= 0 && iy < a.hi && ix >= 0 && ix < a.wi) {
                v = load(x, (int64_t(ci) * a.hi + iy) * a.wi + ix);
                if (a.in_scale) v *= a.in_scale[int64_t(n) * a.ci + ci];
            }
            patch[cl][r][q] = v;
        }
        for (int i = tid; i < CK * Tile::kTaps * TC; i += Tile::kThreads) {
            // tap fastest, then input channel: consecutive threads read consecutive weights
            const int tap = i % Tile::kTaps, cl = (i / Tile::kTaps) % CK, ol = i / (Tile::kTaps * CK);
            const int ci = c0 + cl, co = co0 + ol;
            wtile[cl][tap][ol] = (ci < a.ci && co < a.co) ? a.weight[(int64_t(co) * a.ci + ci) * Tile::kTaps + tap] : 0.f;
        }
        __syncthreads();

        for (int cl = 0; cl < CK; ++cl) {
            for (int ky = 0; ky < K; ++ky) {
                int r;  // patch row of output row oy under tap ky, or -1
                if (a.transposed) {
                    const int t = oy + a.pad - ky;
                    r = (t - floor_div(t, a.stride) * a.stride) ? -1 : floor_div(t, a.stride) - iy0;
                } else {
                    r = py * a.stride + ky;
                }
                if (r < 0 || r >= patch_h) continue;
                for (int kx = 0; kx < K; ++kx) {
                    float w[4], v[4];
                    for (int j = 0; j < 4; ++j) w[j] = wtile[cl][ky * K + kx][cg * 4 + j];
                    for (int q = 0; q < 4; ++q) {
                        int col;
                        if (a.transposed) {
                            const int t = ox0 + px + q + a.pad - kx;
                            col = (t - floor_div(t, a.stride) * a.stride) ? -1 : floor_div(t, a.stride) - ix0;
                        } else {
                            col = (px + q) * a.stride + kx;
                        }
                        v[q] = (col >= 0 && col < patch_w) ? patch[cl][r][col] : 0.f;
                    }
                    for (int j = 0; j < 4; ++j)
                        for (int q = 0; q < 4; ++q) acc[j][q] += w[j] * v[q];
                }
            }
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
