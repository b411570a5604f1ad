// The CUDA build of the kernels.
#include <cstdarg>

#define ILO_BUILD_INFO "cuda " ILO_CUDA_ARCHS
#include "platform.h"

namespace ilo {
bool launch_failed(const char* what);

bool tensor_cores_available() {
    int device = 0, major = 0;
    return cudaGetDevice(&device) == cudaSuccess &&
           cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) == cudaSuccess && major >= 8;
}
}  // namespace ilo
#include "api.inc"

namespace ilo {
bool launch_failed(const char* what) {
    const cudaError_t err = cudaGetLastError();
    if (err == cudaSuccess) return false;
    fail(ILO_ERR_LAUNCH, "%s: %s", what, cudaGetErrorString(err));
    return true;
}
}  // namespace ilo
