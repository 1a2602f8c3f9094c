// Which instruction-set variant of the kernels a translation unit compiles.
//
// The CPU kernels are compiled three times on x86-64 (csrc/cpu/isa_*.cpp): for the build's
// baseline (x86-64-v2 by default: any x86-64 CPU of the last 15 years), for x86-64-v3 (AVX2,
// FMA) and for x86-64-v4 (AVX-512); csrc/cpu/warp_blend.cpp picks one at run time from the
// CPU's features. Every fabnet header opens `inline namespace FABNET_ISA`, so each variant's
// inline functions and templates are distinct symbols: with one namespace the linker would keep
// one copy of each, possibly the AVX-512 one, for all three (a SIGILL on older CPUs).
#pragma once

#ifndef FABNET_ISA
#define FABNET_ISA isa_base
#endif
