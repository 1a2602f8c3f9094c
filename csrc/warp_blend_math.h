// Sampling math shared by the CPU and CUDA kernels: no torch headers, host and device inline.
//
// Coordinates follow F.grid_sample: a normalised coordinate g in [-1, 1] maps to the source pixel
// g * scale + (size - 1) / 2, with scale = (size - 1) / 2 (align_corners) or size / 2 (not).
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define FABNET_HD __host__ __device__ __forceinline__
#else
#define FABNET_HD inline
#endif

namespace fabnet {

enum class Padding : int { kZeros = 0, kBorder = 1 };

// One axis of the warp: normalised coordinate -> source pixel. (The identity grid of `residual`
// is not computed here: the bindings take it from F.affine_grid's own ops, checks.h.)
template <typename acc_t>
struct Axis {
  acc_t scale;       // d(source pixel) / d(normalised coordinate): (size - 1) / 2 or size / 2
  acc_t shift;       // 0 with align_corners, else -0.5
  int64_t size;      // source extent along this axis

  static Axis make(int64_t source_size, int64_t /*output_size*/, bool align_corners) {
    Axis a;
    a.size = source_size;
    a.scale = (align_corners ? acc_t(source_size - 1) : acc_t(source_size)) / acc_t(2);
    a.shift = align_corners ? acc_t(0) : acc_t(-0.5);
    return a;
  }

  // F.grid_sample's unnormalisation, rounded as ATen's kernels round it, so that a point on a
  // pixel centre lands on it exactly: g * scale + offset rounds differently and put zero-offset
  // samples a rounding error to the other side of the centre. Without align_corners ATen's CPU
  // sampler computes (g + 1) * scale - 0.5 and its CUDA sampler ((g + 1) * size - 1) / 2, both
  // compiled into one fused multiply-add (measured: float64, 7 pixels, grid_sample puts the
  // identity's 5th point at 3.9999999999999996, the fused value); halving is exact, so one fma
  // gives both. With align_corners ((g + 1) / 2) * (size - 1) is one rounding of the same
  // product, which fma(g + 1, scale, 0) is too: one instruction and no branch, which keeps the
  // CPU kernel's coordinate loop vectorised (with a branch on align_corners it ran ~2x slower).
  FABNET_HD acc_t to_pixel(acc_t g) const {
    using std::fma;
    return fma(g + acc_t(1), scale, shift);
  }
};

// Clamp for border padding; like grid_sample, the border itself has zero gradient.
template <typename acc_t>
FABNET_HD acc_t clamp_with_grad(acc_t coord, int64_t size, acc_t* grad) {
  const acc_t hi = acc_t(size - 1);
  if (coord <= acc_t(0)) {
    *grad = acc_t(0);
    return acc_t(0);
  }
  if (coord >= hi) {
    *grad = acc_t(0);
    return hi;
  }
  return coord;
}

}  // namespace fabnet
