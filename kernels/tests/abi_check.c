/* The C ABI from plain C (no C++, no Python): bias-act and its gradient on a tiny tensor, with
 * the library's host-emulation build (host pointers, no stream). Exits 0 when the results are
 * right; tests/test_kernels.py compiles and runs it. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "ilo_kernels.h"

static int check(const char* what, float got, float want) {
    if (fabsf(got - want) > 1e-6f * (1.0f + fabsf(want))) {
        fprintf(stderr, "%s: got %g, want %g\n", what, got, want);
        return 1;
    }
    return 0;
}

int main(void) {
    float x[2 * 3 * 4], y[2 * 3 * 4], dy[2 * 3 * 4], dx[2 * 3 * 4], bias[3] = {0.5f, -1.0f, 0.0f}, bias_rows[2 * 3];
    const float gain = 1.41421356f, alpha = 0.2f;
    for (int i = 0; i < 24; ++i) {
        x[i] = (float)(i - 12) / 5.0f;
        dy[i] = 1.0f + (float)i / 10.0f;
    }
    IloBiasActArgs fwd;
    memset(&fwd, 0, sizeof fwd);
    fwd.dtype = ILO_F32;
    fwd.n = 2, fwd.c = 3, fwd.hw = 4, fwd.x = x, fwd.y = y;
    fwd.ep.bias = bias, fwd.ep.alpha = alpha, fwd.ep.gain = gain, fwd.ep.clamp = -1.0f;
    if (ilo_abi_version() != ILO_ABI_VERSION || ilo_bias_act(&fwd, NULL) != ILO_OK) {
        fprintf(stderr, "ilo_bias_act: %s\n", ilo_last_error());
        return 1;
    }
    IloActGradArgs back;
    memset(&back, 0, sizeof back);
    back.dtype = ILO_F32;
    back.n = 2, back.c = 3, back.hw = 4, back.dy = dy, back.y = y, back.dx = dx, back.row_sum = bias_rows;
    back.alpha = alpha, back.gain = gain, back.clamp = -1.0f;
    if (ilo_act_grad(&back, NULL) != ILO_OK) {
        fprintf(stderr, "ilo_act_grad: %s\n", ilo_last_error());
        return 1;
    }
    int bad = 0;
    for (int i = 0; i < 24; ++i) {
        const float v = x[i] + bias[(i / 4) % 3];
        bad |= check("y", y[i], (v > 0 ? v : alpha * v) * gain);
        bad |= check("dx", dx[i], dy[i] * gain * (v > 0 ? 1.0f : alpha));
    }
    for (int r = 0; r < 6; ++r) {
        float sum = 0;
        for (int p = 0; p < 4; ++p) sum += dx[r * 4 + p];
        bad |= check("bias rows", bias_rows[r], sum);
    }
    /* A refused call says why. */
    fwd.n = 0;
    bad |= ilo_bias_act(&fwd, NULL) != ILO_ERR_ARGUMENT || strstr(ilo_last_error(), "bad shape") == NULL;
    if (!bad) printf("ok: %s\n", ilo_build_info());
    return bad;
}
