// Every header from outside fabnet that the CPU ops include, for the variants compiled under a
// target pragma (isa_v3.cpp, isa_v4.cpp) to include first, with the baseline's target.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#include "dispatch.h"
