// Loads of horizontally adjacent source pixel pairs for 16 output pixels (AVX-512, float).
//
// A bilinear tap set reads (x0, y0), (x0 + 1, y0), (x0, y1), (x0 + 1, y1): two pairs of adjacent
// floats. Reading each pair with one 8-byte load halves the loads, and writing the loads with
// intrinsics keeps the per-pixel offsets in general registers: gcc 12's own vectorisation of
// `src[offset[i]]` moves every offset through a vector register and back (three instructions per
// element before the load). These loads gather the taps in about half the time of either that or
// vgatherdpd of the pairs (docs/perf/cpu-kernel.md).
#pragma once

#include "../isa.h"

// FABNET_ISA_AVX512: the x86-64-v4 variant (isa_v4.cpp), compiled under `#pragma GCC target`,
// which does not define __AVX512F__ in C++.
#if defined(__AVX512F__) || defined(FABNET_ISA_AVX512)
#include <immintrin.h>

#include <cstdint>

#define FABNET_HAVE_PAIR_LOADS 1

namespace fabnet {
inline namespace FABNET_ISA {

constexpr int kGroup = 16;  // pixels per AVX-512 float vector

// left[i] = src[offset[i]], right[i] = src[offset[i] + 1] for i in 0..15.
inline void load_pairs16(const float* src, const int32_t* offset, __m512& left, __m512& right) {
  const auto two = [&](int i) {  // pixels i and i + 1: (l_i, r_i, l_{i+1}, r_{i+1})
    const __m128 lo = _mm_loadl_pi(_mm_setzero_ps(), reinterpret_cast<const __m64*>(src + offset[i]));
    return _mm_loadh_pi(lo, reinterpret_cast<const __m64*>(src + offset[i + 1]));
  };
  const auto eight = [&](int i) {  // pixels i .. i + 7, interleaved
    const __m256 a = _mm256_insertf128_ps(_mm256_castps128_ps256(two(i)), two(i + 2), 1);
    const __m256 b = _mm256_insertf128_ps(_mm256_castps128_ps256(two(i + 4)), two(i + 6), 1);
    return _mm512_castpd_ps(
        _mm512_insertf64x4(_mm512_castpd256_pd512(_mm256_castps_pd(a)), _mm256_castps_pd(b), 1));
  };
  const __m512 first = eight(0), second = eight(8);
  const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
  const __m512i odd = _mm512_set_epi32(31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
  left = _mm512_permutex2var_ps(first, even, second);
  right = _mm512_permutex2var_ps(first, odd, second);
}

// Lanes [0, count) of a 16-lane vector.
inline __mmask16 first_lanes(int64_t count) {
  return count >= kGroup ? __mmask16(0xFFFF) : __mmask16((1u << count) - 1u);
}

}  // namespace FABNET_ISA
}  // namespace fabnet

#endif  // __AVX512F__ || FABNET_ISA_AVX512
