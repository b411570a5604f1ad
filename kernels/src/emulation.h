// Host emulation of the CUDA execution model, so the kernels' own source runs on a CPU.
//
// A block's threads are fibers (ucontext) on the calling thread, switched only at barriers:
// __syncthreads waits until every live thread of the block has arrived, and a warp shuffle
// exchanges values through a per-warp slot array between two warp barriers. Blocks run one
// after another, so a function-static array is exactly one block's shared memory. A read of
// shared memory before the barrier that publishes it sees stale data here too, so missing
// barriers, halo and indexing errors show up as wrong results. This is a correctness harness
// for machines without a GPU, never a fast path; races between truly concurrent threads are
// compute-sanitizer's job on a GPU.
#pragma once

#include <ucontext.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <cstdint>
#include <memory>
#include <tuple>
#include <utility>
#include <vector>

#if !defined(__VECTOR_TYPES_H__)  // CUDA's headers, when included, bring their own dim3
struct dim3 {
    unsigned x, y, z;
    constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
#endif

namespace ilo_emu {

enum class Wait { none, warp, block, done };

struct Fiber {
    ucontext_t context;
    std::unique_ptr<char[]> stack;
    dim3 thread;
    unsigned lane = 0, warp = 0;
    Wait wait = Wait::none;
    unsigned long arrivals = 0;  // barriers passed: lanes of one warp must agree before release
};

struct Block {
    std::vector<Fiber> fibers;
    std::vector<float> warp_slots;
    std::vector<float> mma_slots;  // per warp: 32 lanes x (4 a + 2 b) fragment registers
    ucontext_t scheduler;
    Fiber* current = nullptr;
    dim3 block, block_dim, grid_dim;
};

inline thread_local Block* active = nullptr;
constexpr size_t kStack = 64 * 1024;

inline void wait_at(Wait w) {
    Fiber* f = active->current;
    f->wait = w;
    ++f->arrivals;
    swapcontext(&f->context, &active->scheduler);
}

template <class Kernel, class... Args>
struct Job {
    Kernel kernel;
    std::tuple<Args...> args;
    static void entry(int hi, int lo) {
        auto* job = reinterpret_cast<Job*>((uintptr_t(unsigned(hi)) << 32) | uintptr_t(unsigned(lo)));
        std::apply(job->kernel, job->args);
        active->current->wait = Wait::done;
        swapcontext(&active->current->context, &active->scheduler);
    }
};

// True when every live fiber in `group` (all, or one warp) waits at `w` after the same number of barriers.
inline bool releasable(const Block& b, Wait w, int warp) {
    long arrivals = -1;
    for (const Fiber& f : b.fibers) {
        if (f.wait == Wait::done || (warp >= 0 && int(f.warp) != warp)) continue;
        if (f.wait != w) return false;
        if (arrivals >= 0 && long(f.arrivals) != arrivals) return false;
        arrivals = long(f.arrivals);
    }
    return arrivals >= 0;
}

template <class Kernel, class... Args>
void launch(Kernel kernel, dim3 grid, dim3 block_dim, Args... args) {
    Job<Kernel, Args...> job{kernel, std::tuple<Args...>(args...)};
    const unsigned threads = block_dim.x * block_dim.y * block_dim.z;
    Block b;
    b.block_dim = block_dim;
    b.grid_dim = grid;
    b.fibers.resize(threads);
    b.warp_slots.assign(32 * ((threads + 31) / 32), 0.f);
    b.mma_slots.assign(32 * 6 * ((threads + 31) / 32), 0.f);
    for (auto& f : b.fibers) f.stack.reset(new char[kStack]);
    Block* saved = active;
    active = &b;
    const uintptr_t address = reinterpret_cast<uintptr_t>(&job);
    for (unsigned bz = 0; bz < grid.z; ++bz)
        for (unsigned by = 0; by < grid.y; ++by)
            for (unsigned bx = 0; bx < grid.x; ++bx) {
                b.block = dim3(bx, by, bz);
                for (unsigned t = 0; t < threads; ++t) {
                    Fiber& f = b.fibers[t];
                    f.thread = dim3(t % block_dim.x, (t / block_dim.x) % block_dim.y, t / (block_dim.x * block_dim.y));
                    f.lane = t % 32;
                    f.warp = t / 32;
                    f.wait = Wait::none;
                    f.arrivals = 0;
                    getcontext(&f.context);
                    f.context.uc_stack.ss_sp = f.stack.get();
                    f.context.uc_stack.ss_size = kStack;
                    f.context.uc_link = nullptr;
                    makecontext(&f.context, reinterpret_cast<void (*)()>(&Job<Kernel, Args...>::entry), 2,
                                int(address >> 32), int(address & 0xffffffffu));
                }
                for (;;) {
                    // Decide every release before resuming anyone (a snapshot of this round).
                    std::vector<char> go(threads, 0);
                    bool live = false;
                    const bool block_ready = releasable(b, Wait::block, -1);
                    for (unsigned t = 0; t < threads; ++t) {
                        const Fiber& f = b.fibers[t];
                        if (f.wait == Wait::done) continue;
                        live = true;
                        go[t] = f.wait == Wait::none || (f.wait == Wait::block && block_ready) ||
                                (f.wait == Wait::warp && releasable(b, Wait::warp, int(f.warp)));
                    }
                    if (!live) break;
                    bool progressed = false;
                    for (unsigned t = 0; t < threads; ++t) {
                        if (!go[t]) continue;
                        progressed = true;
                        b.current = &b.fibers[t];
                        b.fibers[t].wait = Wait::none;
                        swapcontext(&b.scheduler, &b.fibers[t].context);
                    }
                    if (!progressed) {
                        std::fprintf(stderr, "ilo emulation: deadlock at a barrier in block (%u,%u,%u)\n", bx, by, bz);
                        std::abort();
                    }
                }
            }
    active = saved;
}

// One warp's mma.sync m16n8k8 (TF32 inputs, fp32 accumulate): every lane publishes its A and
// B fragment registers, then computes its own four outputs from the whole tiles, reading each
// element from the lane and register PTX's fragment layout assigns it to.
inline void mma_tf32_m16n8k8(float d[4], const float a[4], const float b[2]) {
    Fiber* f = active->current;
    float* slots = active->mma_slots.data() + 32 * 6 * f->warp;
    const unsigned lane = f->lane;
    for (int i = 0; i < 4; ++i) slots[lane * 6 + i] = a[i];
    for (int i = 0; i < 2; ++i) slots[lane * 6 + 4 + i] = b[i];
    wait_at(Wait::warp);
    f = active->current;
    auto A = [&](int row, int k) { return slots[((row % 8) * 4 + k % 4) * 6 + (row >= 8) + 2 * (k >= 4)]; };
    auto B = [&](int k, int col) { return slots[(col * 4 + k % 4) * 6 + 4 + (k >= 4)]; };
    const int g = int(lane) / 4, t = int(lane) % 4;
    float out[4];
    for (int i = 0; i < 4; ++i) {
        const int row = g + 8 * (i >= 2), col = 2 * t + (i & 1);
        float sum = d[i];
        for (int k = 0; k < 8; ++k) sum += A(row, k) * B(k, col);
        out[i] = sum;
    }
    wait_at(Wait::warp);  // nobody overwrites the slots before every lane has read them
    for (int i = 0; i < 4; ++i) d[i] = out[i];
}

}  // namespace ilo_emu

#define threadIdx (ilo_emu::active->current->thread)
#define blockIdx (ilo_emu::active->block)
#define blockDim (ilo_emu::active->block_dim)
#define gridDim (ilo_emu::active->grid_dim)
#undef __global__
#undef __device__
#undef __host__
#undef __forceinline__
#undef __shared__
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#ifndef __restrict__
#define __restrict__ __restrict
#endif

inline void __syncthreads() { ilo_emu::wait_at(ilo_emu::Wait::block); }

inline float __shfl_xor_sync(unsigned, float v, int lane_mask) {
    ilo_emu::Fiber* f = ilo_emu::active->current;
    float* slots = ilo_emu::active->warp_slots.data() + 32 * f->warp;
    slots[f->lane] = v;
    ilo_emu::wait_at(ilo_emu::Wait::warp);
    f = ilo_emu::active->current;
    const float other = slots[f->lane ^ unsigned(lane_mask)];
    ilo_emu::wait_at(ilo_emu::Wait::warp);
    return other;
}

// Fibers never interleave inside an add.
inline float atomicAdd(float* address, float v) {
    const float old = *address;
    *address = old + v;
    return old;
}
inline float rsqrtf(float v) { return 1.0f / std::sqrt(v); }

#include <algorithm>
#include <math.h>
using std::max;
using std::min;
