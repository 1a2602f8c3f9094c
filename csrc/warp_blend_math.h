// Sampling math shared by the CPU (cpu/problem.h) and CUDA (cuda/device_functions.cuh) kernels:
// no torch headers, host and device inline. kernels/warp_blend.py writes the same steps in Triton.
//
// Coordinates follow F.grid_sample: a normalised coordinate g in [-1, 1] maps to the source pixel
// g * scale + (size - 1) / 2, with scale = (size - 1) / 2 (align_corners) or size / 2 (not).
#pragma once

#include <cmath>
#include <cstdint>

#include "isa.h"

#if defined(__CUDACC__)
#define FABNET_HD __host__ __device__ __forceinline__
#else
#define FABNET_HD inline
#endif

namespace fabnet {
inline namespace FABNET_ISA {

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

// Border padding clamps a coordinate to [0, last] (last = size - 1) and, like grid_sample, gives
// it zero derivative on and past the border. Written as selects, not branches: the CPU kernel
// calls these inside `omp simd` loops, which gcc vectorises only without control flow. A NaN
// fails every comparison and passes through clamp_to_border unchanged (the callers turn it into
// their NaN contract); +-inf clamps to the edge, as in grid_sample.
template <typename acc_t>
FABNET_HD acc_t clamp_to_border(acc_t coord, acc_t last) {
  return coord < acc_t(0) ? acc_t(0) : (coord > last ? last : coord);
}

template <typename acc_t>
FABNET_HD acc_t border_derivative(acc_t coord, acc_t last, acc_t d) {
  return ((coord > acc_t(0)) & (coord < last)) ? d : acc_t(0);
}

// Points further than one pixel outside the source sample nothing; bounding them to
// [-2, last + 2] keeps the float -> int conversion defined. A NaN lands on -2 (every tap outside).
template <typename acc_t>
FABNET_HD acc_t keep_near(acc_t coord, acc_t last) {
  coord = coord > acc_t(-2) ? coord : acc_t(-2);
  return coord < last + acc_t(2) ? coord : last + acc_t(2);
}

// Bilinear weights of the taps nw (x0, y0), ne (x0 + 1, y0), sw (x0, y0 + 1), se (x0 + 1, y0 + 1)
// at fractions tx, ty in [0, 1). grid_sample forms the same four products.
template <typename acc_t>
struct BilinearWeights {
  acc_t nw, ne, sw, se;
  FABNET_HD BilinearWeights(acc_t tx, acc_t ty) {
    const acc_t ux = acc_t(1) - tx, uy = acc_t(1) - ty;
    nw = ux * uy;
    ne = tx * uy;
    sw = ux * ty;
    se = tx * ty;
  }
};

// One axis of a sampling point in source pixels: the bounded coordinate, d(pixel)/d(grid
// coordinate) (0 where the border clamps), and `poison`: NaN where grid_sample's result is NaN,
// else 0. The CUDA kernels add `poison` to the cell's fraction, so the blend and the other
// coordinate's gradient are NaN there: with zeros padding for a NaN or infinite coordinate
// (inf - inf is NaN), with border padding for a NaN one (an infinite one clamps). The CPU kernel
// computes the same flag over a block of pixels at once (cpu/problem.h, poison_block).
template <typename acc_t>
struct SourceCoord {
  acc_t pixel, d, poison;
};

template <typename acc_t>
FABNET_HD SourceCoord<acc_t> source_coord(acc_t g, const Axis<acc_t>& axis, bool border) {
  SourceCoord<acc_t> c;
  const acc_t last = acc_t(axis.size - 1);
  acc_t pixel = axis.to_pixel(g);
  c.d = axis.scale;
  if (border) {
    c.d = border_derivative(pixel, last, c.d);
    pixel = clamp_to_border(pixel, last);
  }
  c.poison = pixel - pixel;
  c.pixel = keep_near(pixel, last);
  return c;
}

}  // namespace FABNET_ISA
}  // namespace fabnet
