// The CPU ops compiled for x86-64-v3 (AVX2, FMA, BMI2), chosen at run time on CPUs that have it.
//
// Every header from outside fabnet is included before the target pragma, so that only fabnet's
// own code (its own namespace, isa.h) is compiled for this target: an inline function of torch or
// of the standard library compiled here could be picked by the linker for the other variants.
#include "external_headers.h"

#if defined(__x86_64__) && !defined(FABNET_CPU_BASELINE_AT_LEAST_V3)
#pragma GCC push_options
#pragma GCC target("arch=x86-64-v3")
#define FABNET_ISA isa_v3
#define FABNET_CPU_OPS_TABLE cpu_ops_v3
#include "ops_impl.h"
#pragma GCC pop_options
#else
namespace fabnet {
const CpuOps* cpu_ops_v3() { return nullptr; }
}  // namespace fabnet
#endif
