// The CPU ops compiled for the build's baseline target (-march of setup.py: x86-64-v2 unless
// FABNET_CPU_ARCH says otherwise): what runs on any CPU the build supports.
#define FABNET_ISA isa_base
#define FABNET_CPU_OPS_TABLE cpu_ops_base
#include "ops_impl.h"
