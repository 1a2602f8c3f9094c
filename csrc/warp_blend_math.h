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

// One axis of the warp: output index -> identity coordinate, normalised -> source pixel.
template <typename acc_t>
struct Axis {
  acc_t scale;       // d(source pixel) / d(normalised coordinate)
  acc_t offset;      // (size - 1) / 2
  acc_t base_start;  // identity grid at output index 0 (F.affine_grid)
  acc_t base_step;   // identity grid step per output index
  int64_t size;      // source extent along this axis

  static Axis make(int64_t source_size, int64_t output_size, bool align_corners) {
    Axis a;
    a.size = source_size;
    a.offset = acc_t(source_size - 1) / acc_t(2);
    a.scale = align_corners ? acc_t(source_size - 1) / acc_t(2) : acc_t(source_size) / acc_t(2);
    // F.affine_grid: linspace(-1, 1, n), times (n - 1) / n without align_corners; 0 when n == 1.
    if (output_size <= 1) {
      a.base_start = acc_t(0);
      a.base_step = acc_t(0);
    } else if (align_corners) {
      a.base_start = acc_t(-1);
      a.base_step = acc_t(2) / acc_t(output_size - 1);
    } else {
      a.base_start = acc_t(1 - output_size) / acc_t(output_size);
      a.base_step = acc_t(2) / acc_t(output_size);
    }
    return a;
  }

  FABNET_HD acc_t identity(int64_t i) const { return base_start + base_step * acc_t(i); }
};

// The four bilinear taps of one sampling point, in the order nw, ne, sw, se.
template <typename acc_t>
struct Taps {
  int64_t offset[4];  // element offsets y * stride_y + x * stride_x; 0 for taps outside
  acc_t valid[4];     // 1 inside the source, 0 outside (zero padding)
  acc_t tx, ty;       // fractional position inside the cell
  acc_t dx, dy;       // d(source pixel) / d(grid coordinate); 0 where border padding clamps

  FABNET_HD acc_t weight(int i) const {
    const acc_t wx = (i & 1) ? tx : acc_t(1) - tx;
    const acc_t wy = (i & 2) ? ty : acc_t(1) - ty;
    return valid[i] * wx * wy;
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

template <typename acc_t>
FABNET_HD Taps<acc_t> make_taps(acc_t gx, acc_t gy, const Axis<acc_t>& ax, const Axis<acc_t>& ay,
                                Padding padding, int64_t stride_y, int64_t stride_x) {
  Taps<acc_t> t;
  acc_t ix = gx * ax.scale + ax.offset;
  acc_t iy = gy * ay.scale + ay.offset;
  t.dx = ax.scale;
  t.dy = ay.scale;
  if (padding == Padding::kBorder) {
    ix = clamp_with_grad(ix, ax.size, &t.dx);
    iy = clamp_with_grad(iy, ay.size, &t.dy);
  }
  // Non-finite or far-away points (|coordinate| past 2^40) sample nothing: keeps the int64 cast defined.
  const acc_t limit = acc_t(1099511627776.0);
  if (!(ix > -limit && ix < limit && iy > -limit && iy < limit)) {
    for (int i = 0; i < 4; ++i) {
      t.offset[i] = 0;
      t.valid[i] = acc_t(0);
    }
    t.tx = t.ty = acc_t(0);
    t.dx = t.dy = acc_t(0);
    return t;
  }
  const acc_t fx = floor(ix);
  const acc_t fy = floor(iy);
  const int64_t x0 = static_cast<int64_t>(fx);
  const int64_t y0 = static_cast<int64_t>(fy);
  t.tx = ix - fx;
  t.ty = iy - fy;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int64_t x = x0 + (i & 1);
    const int64_t y = y0 + ((i >> 1) & 1);
    const bool inside = x >= 0 && x < ax.size && y >= 0 && y < ay.size;
    t.valid[i] = inside ? acc_t(1) : acc_t(0);
    t.offset[i] = inside ? y * stride_y + x * stride_x : 0;
  }
  return t;
}

// Value and its derivatives along x and y (in source pixels) for one channel plane.
template <typename acc_t, typename scalar_t>
FABNET_HD void sample_with_grad(const scalar_t* plane, const Taps<acc_t>& t, acc_t* value,
                                acc_t* d_ix, acc_t* d_iy) {
  acc_t v[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) v[i] = t.valid[i] * static_cast<acc_t>(plane[t.offset[i]]);
  const acc_t ux = acc_t(1) - t.tx, uy = acc_t(1) - t.ty;
  *value = uy * (ux * v[0] + t.tx * v[1]) + t.ty * (ux * v[2] + t.tx * v[3]);
  *d_ix = uy * (v[1] - v[0]) + t.ty * (v[3] - v[2]);
  *d_iy = ux * (v[2] - v[0]) + t.tx * (v[3] - v[1]);
}

template <typename acc_t, typename scalar_t>
FABNET_HD acc_t sample(const scalar_t* plane, const Taps<acc_t>& t) {
  acc_t out = acc_t(0);
#pragma unroll
  for (int i = 0; i < 4; ++i) out += t.weight(i) * static_cast<acc_t>(plane[t.offset[i]]);
  return out;
}

template <typename acc_t>
FABNET_HD acc_t sign_of(acc_t x) {
  return x > acc_t(0) ? acc_t(1) : (x < acc_t(0) ? acc_t(-1) : acc_t(0));
}

}  // namespace fabnet
