// The CPU ops compiled for x86-64-v4 (AVX-512 F, BW, DQ, VL, CD), chosen at run time on CPUs that
// have it: the tap gathers use AVX-512's pair loads (pair_loads.h), which make this variant about
// twice as fast as the v3 one (benchmarks/bench_cpu_isa.py; docs/perf/cpu-kernel.md).
//
// Every header from outside fabnet is included before the target pragma (see isa_v3.cpp).
#include "external_headers.h"

#if defined(__x86_64__) && !defined(FABNET_CPU_BASELINE_AT_LEAST_V4)
#pragma GCC push_options
#pragma GCC target("arch=x86-64-v4")
#define FABNET_ISA isa_v4
#define FABNET_ISA_AVX512 1
#define FABNET_CPU_OPS_TABLE cpu_ops_v4
#include "ops_impl.h"
#pragma GCC pop_options
#else
namespace fabnet {
const CpuOps* cpu_ops_v4() { return nullptr; }
}  // namespace fabnet
#endif
