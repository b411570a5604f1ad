/* ILO kernels: StyleGAN2's modulated convolution, upfirdn2d and bias-act, with their VJPs.
 *
 * A plain C ABI (no C++ or torch types cross it), so one build serves any torch and any
 * caller that holds device pointers. Every call takes a stream (cudaStream_t as void*; NULL is
 * the legacy default stream) and returns 0 or an ILO_ERR_* code; ilo_last_error() says why.
 * Tensors are contiguous NCHW. Activations are ILO_F32, ILO_F16 or ILO_BF16 (accumulation is
 * always fp32); weights, filters, styles and per-(n, c) scales are fp32.
 */
#ifndef ILO_KERNELS_H
#define ILO_KERNELS_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define ILO_API __declspec(dllexport)
#else
#define ILO_API __attribute__((visibility("default")))
#endif

#define ILO_ABI_VERSION 1

enum { ILO_F32 = 0, ILO_F16 = 1, ILO_BF16 = 2 };
enum { ILO_MATH_FP32 = 0, ILO_MATH_TF32 = 1 };
enum { ILO_OK = 0, ILO_ERR_ARGUMENT = 1, ILO_ERR_DTYPE = 2, ILO_ERR_LAUNCH = 3 };

/* What happens to each accumulated value v at (n, c, p), in this order:
 *   z[n,c,p] = v                         (if z)
 *   v = v * scale[n,c]                   (if scale: demodulation, or a style in a VJP)
 *   v = v + noise[n,0,p]                 (if noise; batch stride 0 broadcasts one map)
 *   v = v + bias[c]                      (if bias)
 *   v = (v > 0 ? v : alpha * v) * gain   (identity when alpha = gain = 1)
 *   v = clamp(v, -clamp, clamp)          (if clamp >= 0)
 *   y[n,c,p] = v
 *   reduce_out[n,c] += sum_p z_value * reduce_ref[n,c,p]   (if reduce_out; fp32, pre-zeroed)
 */
typedef struct {
    const float* scale;
    void* z;
    const void* noise;
    int64_t noise_batch_stride;
    const float* bias;
    float alpha, gain, clamp;
    const void* reduce_ref;
    float* reduce_out;
} IloEpilogue;

/* Direct convolution of x scaled per input channel, with the epilogue above.
 *   transposed = 0: y[n,o,oy,ox] = sum_{i,ky,kx} w[o,i,ky,kx] s[n,i] x[n,i,oy*stride+ky-pad, ox*stride+kx-pad]
 *   transposed = 1: y[n,o,oy,ox] = sum over (i,ky,kx) with oy+pad-ky = iy*stride (and the same in x)
 *                   of w[o,i,ky,kx] s[n,i] x[n,i,iy,ix]    (conv_transpose2d with weight w^T)
 * Out-of-range input reads are zero. in_scale may be NULL.
 * math = ILO_MATH_FP32: fp32 FMAs on the CUDA cores (exact to float rounding);
 *        ILO_MATH_TF32: TF32 tensor cores (sm_80+), inputs rounded to 10-bit mantissas, fp32
 *        accumulation: what torch's convolutions do by default. 1x1 to-RGB layers (co <= 4)
 *        always run fp32. */
typedef struct {
    int32_t dtype;
    int32_t n, ci, hi, wi, co, ho, wo;
    int32_t k, stride, pad, transposed;
    int32_t math;
    const void* x;
    const float* in_scale;
    const float* weight; /* [co, ci, k, k] */
    void* y;
    IloEpilogue ep;
} IloConvArgs;

/* upfirdn2d over N*C planes: zero-insert by `up`, pad (pad0 before, pad1 after; negative crops),
 * correlate with filter (already flipped and scaled by the caller), keep every `down`-th sample.
 *   adjoint = 0: y = that, of shape ho x wo, then the epilogue.
 *   adjoint = 1: the exact transpose: x is the cotangent of shape ho x wo (the forward output),
 *                y receives the cotangent of shape hi x wi (the forward input); epilogue applies.
 * (hi, wi) is always the forward input's size, (ho, wo) the forward output's. */
typedef struct {
    int32_t dtype;
    int32_t n, c, hi, wi, ho, wo;
    int32_t up, down, pad0, pad1, fh, fw;
    int32_t adjoint;
    const float* filter; /* [fh, fw] */
    const void* x;
    void* y;
    IloEpilogue ep;
} IloUpfirdnArgs;

/* Elementwise bias-act over [n, c, hw]: y = epilogue(x). */
typedef struct {
    int32_t dtype;
    int32_t n, c, hw;
    const void* x;
    void* y;
    IloEpilogue ep;
} IloBiasActArgs;

/* The VJP of the epilogue's activation, from its output y (as StyleGAN2's bias_act does):
 *   g = dy * gain * (y > 0 ? 1 : alpha) * (clamp < 0 || |y| < clamp)
 *   dx = g * scale[n,c] (scale may be NULL)         -> dx, of dtype
 *   row_sum[n,c] = sum_p g * ref[n,c,p]  (if row_sum; ref NULL means 1: the bias gradient rows)
 *   channel_sum[n,p] = sum_c g          (if channel_sum: the noise map's gradient), fp32 */
typedef struct {
    int32_t dtype;
    int32_t n, c, hw;
    const void* dy;
    const void* y;
    float alpha, gain, clamp;
    const float* scale;
    void* dx;
    const void* ref;
    float* row_sum;
    float* channel_sum;
} IloActGradArgs;

ILO_API int ilo_abi_version(void);
ILO_API const char* ilo_build_info(void);
ILO_API const char* ilo_last_error(void);
/* sizeof of each argument struct, so a binding can check its layout before the first call. */
ILO_API int64_t ilo_struct_size(const char* name);

ILO_API int ilo_conv(const IloConvArgs* args, void* stream);
ILO_API int ilo_upfirdn2d(const IloUpfirdnArgs* args, void* stream);
ILO_API int ilo_bias_act(const IloBiasActArgs* args, void* stream);
ILO_API int ilo_act_grad(const IloActGradArgs* args, void* stream);

#ifdef __cplusplus
}
#endif
#endif
