// The host-emulation build: the same kernel source run on CPU threads (see emulation.h), for
// checking the kernels' logic on machines without a GPU. Pointers are host pointers.
#include <cstdarg>

#if defined(ILO_EMULATION_HALF)
#define ILO_BUILD_INFO "host-emulation fp32 fp16 bf16"
#else
#define ILO_BUILD_INFO "host-emulation fp32"
#endif
#include "platform.h"

namespace ilo {
bool launch_failed(const char*) { return false; }
bool tensor_cores_available() { return true; }  // emulated, with PTX's fragment layouts
}  // namespace ilo
#include "api.inc"
