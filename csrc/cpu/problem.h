// The set-up shared by the CPU kernels: blocks of output pixels in structure-of-arrays form, their
// bilinear taps (TapBlock, Problem::taps), the softmax weights, how rows are split over threads,
// and the compile-time K of the unrolled loops. Included by csrc/cpu/warp_blend.cpp only.
#pragma once

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "../checks.h"
#include "../warp_blend_math.h"
#include "pair_loads.h"

namespace fabnet {
inline namespace FABNET_ISA {
namespace cpu {

// Output pixels are processed in blocks of up to kBlock along a row, in structure-of-arrays
// form, so every per-pixel loop below is a plain `omp simd` loop: the tap gathers become vector
// gathers (vgatherdps) and the softmax uses a polynomial exp the compiler can vectorise. The
// scalar per-pixel version was slower than eager PyTorch (docs/perf/cpu-kernel.md).
constexpr int64_t kBlock = 64;
#ifdef FABNET_HAVE_PAIR_LOADS
constexpr bool kHavePairLoads = true;
#else
constexpr bool kHavePairLoads = false;
#endif

// exp for x <= 0 (softmax after subtracting the max), vectorisable: 2^n * p(r) with
// r = x - n ln2 in [-ln2/2, ln2/2] and a degree-6 polynomial; max relative error ~2e-7.
inline float exp_nonpositive(float x) {
  x = x < -87.0f ? -87.0f : x;  // NaN stays NaN (a NaN logit makes its pixel's softmax NaN)
  const float n = std::floor(x * 1.44269504f + 0.5f);
  const float r = (x - n * 0.693145752f) - n * 1.42860677e-6f;
  float p = 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}
inline double exp_nonpositive(double x) { return std::exp(x); }

// The taps of one source over one block of pixels. Offsets are clamped into the source so every
// gather is in bounds; taps outside carry zero weight (zero padding).
template <typename acc_t>
struct TapBlock {
  int32_t offset[4][kBlock];  // y * stride_y + x * stride_x of nw, ne, sw, se
  acc_t weight[4][kBlock];    // bilinear weight times validity (times the softmax weight in forward)
  acc_t valid[4][kBlock];     // 1 inside the source, 0 outside
  acc_t tx[kBlock], ty[kBlock];
  acc_t dx[kBlock], dy[kBlock];  // d(source pixel) / d(grid coordinate), 0 where border clamps
  // The same taps as two pairs of adjacent pixels (Problem::pairs): rows y0 and y1 both start at
  // column bx = clamp(x0, 0, Ws - 2), so every pair lies inside the source. The bilinear value is
  // pair_weight . (left y0, right y0, left y1, right y1); nw_is_left says whether the nw / sw tap
  // is the left element of its pair (else the right), ne_is_right whether ne / se is the right.
  // Lanes n .. the next multiple of 16 hold offset 0 and weight 0.
  int32_t pair[2][kBlock];
  acc_t pair_weight[4][kBlock];
  acc_t nw_is_left[kBlock], ne_is_right[kBlock];
};

// Asks for the kBlock elements after p (the next block of the same plane, read a moment later).
// The kernel streams about 10 planes at once (flows, logits, target, gradients, per source);
// at (8, 3, 3, 128, 128) half of taps_impl's samples sat on its first flow loads without this,
// and the training pass is a fifth faster with it (docs/perf/cpu-kernel.md).
template <typename T>
inline void prefetch_next_block(const T* p) {
  constexpr int64_t per_line = 64 / sizeof(T);
  for (int64_t j = 0; j < kBlock; j += per_line) __builtin_prefetch(p + j);
}

// Everything a block needs to know about one call. Flows, logits, target and upstream gradients
// are made contiguous by the caller; sources keep their own strides (a permuted source batch is
// read in place rather than copied).
template <typename scalar_t>
struct Problem {
  using acc_t = at::opmath_type<scalar_t>;
  const scalar_t* sources;
  int64_t src_b, src_k, src_c;
  int32_t src_y, src_x;
  const scalar_t* flows;   // (B, K, 2, H, W)
  const scalar_t* logits;  // (B, K, H, W) or nullptr for equal weights
  int64_t B, K, C, H, W;
  Axis<acc_t> ax, ay;
  at::Tensor identity_x_owner, identity_y_owner;  // F.affine_grid's identity, (W,) and (H,)
  const acc_t* identity_x;
  const acc_t* identity_y;
  Padding padding;
  bool residual;
  bool pairs;  // float sources with unit x stride, Ws >= 2, AVX-512: read taps as pairs

  Problem(const at::Tensor& s, const at::Tensor& f, const at::Tensor* l, Padding pad, bool res,
          bool align_corners)
      : sources(s.data_ptr<scalar_t>()),
        src_b(s.stride(0)), src_k(s.stride(1)), src_c(s.stride(2)),
        src_y(static_cast<int32_t>(s.stride(3))), src_x(static_cast<int32_t>(s.stride(4))),
        flows(f.data_ptr<scalar_t>()),
        logits(l ? l->data_ptr<scalar_t>() : nullptr),
        B(s.size(0)), K(s.size(1)), C(s.size(2)), H(f.size(3)), W(f.size(4)),
        ax(Axis<acc_t>::make(s.size(4), f.size(4), align_corners)),
        ay(Axis<acc_t>::make(s.size(3), f.size(3), align_corners)),
        identity_x_owner(identity_axis(f.size(4), align_corners, res, f)),
        identity_y_owner(identity_axis(f.size(3), align_corners, res, f)),
        identity_x(identity_x_owner.data_ptr<acc_t>()),
        identity_y(identity_y_owner.data_ptr<acc_t>()),
        padding(pad),
        residual(res),
        pairs(std::is_same<scalar_t, float>::value && kHavePairLoads && s.stride(4) == 1 &&
              s.size(4) >= 2) {
    // Tap offsets are int32 so that gathers vectorise; a source plane must fit.
    const int64_t last = (s.size(3) - 1) * s.stride(3) + (s.size(4) - 1) * s.stride(4);
    TORCH_CHECK(last < (int64_t(1) << 31) && s.stride(3) >= 0 && s.stride(4) >= 0,
                "sources: one (Hs, Ws) plane must span fewer than 2^31 elements; got sizes ",
                s.sizes(), " strides ", s.strides());
  }

  const scalar_t* plane(int64_t b, int64_t k, int64_t c) const {
    return sources + b * src_b + k * src_k + c * src_c;
  }

  // Which fields of a TapBlock taps() fills: the per-tap ones (offsets, validity, weights,
  // fractions, derivatives: the gradients and the per-tap loops), the pair ones, or both.
  enum class TapFields { kTaps, kPairs, kBoth };

  // Taps of source k for pixels (b, h, x0 .. x0 + n), with the fields the caller reads (only the
  // per-tap ones where this call does not read pairs): the forward reads only the pair fields,
  // and skipping the others saves a tenth of it (docs/perf/cpu-kernel.md).
  void taps(int64_t b, int64_t k, int64_t h, int64_t x0, int64_t n, TapBlock<acc_t>& t,
            TapFields want = TapFields::kTaps) const {
    // The padding mode is a template argument: a branch inside the loop stops gcc vectorising it.
    const TapFields fields = pairs ? want : TapFields::kTaps;
    if (padding == Padding::kBorder)
      taps_for<true>(fields, b, k, h, x0, n, t);
    else
      taps_for<false>(fields, b, k, h, x0, n, t);
  }

  template <bool border>
  void taps_for(TapFields fields, int64_t b, int64_t k, int64_t h, int64_t x0, int64_t n,
                TapBlock<acc_t>& t) const {
    switch (fields) {
      case TapFields::kTaps: return taps_impl<border, TapFields::kTaps>(b, k, h, x0, n, t);
      case TapFields::kPairs: return taps_impl<border, TapFields::kPairs>(b, k, h, x0, n, t);
      case TapFields::kBoth: return taps_impl<border, TapFields::kBoth>(b, k, h, x0, n, t);
    }
  }

  template <bool border, TapFields fields>
  void taps_impl(int64_t b, int64_t k, int64_t h, int64_t x0, int64_t n, TapBlock<acc_t>& t) const {
    constexpr bool with_taps = fields != TapFields::kPairs, with_pairs = fields != TapFields::kTaps;
    const int64_t hw = H * W;
    const scalar_t* fx = flows + (b * K + k) * 2 * hw + h * W + x0;
    const scalar_t* fy = fx + hw;
    const acc_t base_y = identity_y[h];
    const acc_t* __restrict base_x = identity_x + x0;
    const acc_t xmax = acc_t(ax.size - 1), ymax = acc_t(ay.size - 1);
    const int32_t xlast = static_cast<int32_t>(ax.size - 1), ylast = static_cast<int32_t>(ay.size - 1);
    const int32_t sy = src_y, sx = src_x;
    // Two simple loops rather than one: gcc 12 does not if-convert (and so does not vectorise)
    // the fused body. The first leaves the source-pixel coordinates in t.tx / t.ty.
    prefetch_next_block(fx + n);
    prefetch_next_block(fy + n);
    acc_t* __restrict px = t.tx;
    acc_t* __restrict py = t.ty;
    acc_t* __restrict ddx = t.dx;
    acc_t* __restrict ddy = t.dy;
    const acc_t scale_x = ax.scale, scale_y = ay.scale;
    const Axis<acc_t> axis_x = ax, axis_y = ay;
    const acc_t zero = acc_t(0);
    // Non-finite coordinates are rare: this pass only adds up a flag (0, or NaN where some
    // coordinate is one grid_sample cannot place), and poison_block handles the block if it is set.
    const acc_t nan = std::numeric_limits<acc_t>::quiet_NaN();
    acc_t unplaced = zero;
#pragma omp simd reduction(+ : unplaced)
    for (int64_t i = 0; i < n; ++i) {
      acc_t ix = axis_x.to_pixel(static_cast<acc_t>(fx[i]) + base_x[i]);
      acc_t iy = axis_y.to_pixel(static_cast<acc_t>(fy[i]) + base_y);
      acc_t dx = scale_x, dy = scale_y;
      if constexpr (border) {  // like grid_sample: clamp, with zero gradient on and past the border
        unplaced += (ix == ix ? zero : nan) + (iy == iy ? zero : nan);  // NaN only: inf clamps
        dx = border_derivative(ix, xmax, dx);
        dy = border_derivative(iy, ymax, dy);
        ix = clamp_to_border(ix, xmax);
        iy = clamp_to_border(iy, ymax);
      } else {
        unplaced += (ix - ix) + (iy - iy);  // 0, or NaN for NaN and +-inf
      }
      px[i] = keep_near(ix, xmax);  // NaN -> -2: every tap outside
      py[i] = keep_near(iy, ymax);
      if constexpr (with_taps) {
        ddx[i] = dx;
        ddy[i] = dy;
      }
    }
    int32_t* __restrict o0 = t.offset[0];
    int32_t* __restrict o1 = t.offset[1];
    int32_t* __restrict o2 = t.offset[2];
    int32_t* __restrict o3 = t.offset[3];
    acc_t* __restrict m0 = t.valid[0];
    acc_t* __restrict m1 = t.valid[1];
    acc_t* __restrict m2 = t.valid[2];
    acc_t* __restrict m3 = t.valid[3];
    acc_t* __restrict w0 = t.weight[0];
    acc_t* __restrict w1 = t.weight[1];
    acc_t* __restrict w2 = t.weight[2];
    acc_t* __restrict w3 = t.weight[3];
    int32_t* __restrict q0 = t.pair[0];
    int32_t* __restrict q1 = t.pair[1];
    acc_t* __restrict pw0 = t.pair_weight[0];
    acc_t* __restrict pw1 = t.pair_weight[1];
    acc_t* __restrict pw2 = t.pair_weight[2];
    acc_t* __restrict pw3 = t.pair_weight[3];
    acc_t* __restrict nw_left = t.nw_is_left;
    acc_t* __restrict ne_right = t.ne_is_right;
    const int32_t xpair = std::max<int32_t>(xlast - 1, 0);
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) {
      const acc_t fx0 = std::floor(px[i]), fy0 = std::floor(py[i]);
      const acc_t tx = px[i] - fx0, ty = py[i] - fy0;
      const int32_t x0i = static_cast<int32_t>(fx0), y0i = static_cast<int32_t>(fy0);
      const int32_t x1i = x0i + 1, y1i = y0i + 1;
      const acc_t vx0 = (x0i >= 0 & x0i <= xlast) ? acc_t(1) : acc_t(0);
      const acc_t vx1 = (x1i >= 0 & x1i <= xlast) ? acc_t(1) : acc_t(0);
      const acc_t vy0 = (y0i >= 0 & y0i <= ylast) ? acc_t(1) : acc_t(0);
      const acc_t vy1 = (y1i >= 0 & y1i <= ylast) ? acc_t(1) : acc_t(0);
      const int32_t cx0 = std::min(std::max(0, x0i), xlast), cx1 = std::min(std::max(0, x1i), xlast);
      const int32_t cy0 = std::min(std::max(0, y0i), ylast), cy1 = std::min(std::max(0, y1i), ylast);
      const acc_t v0 = vx0 * vy0, v1 = vx1 * vy0, v2 = vx0 * vy1, v3 = vx1 * vy1;
      const BilinearWeights<acc_t> bw(tx, ty);
      const acc_t b0 = bw.nw * v0, b1 = bw.ne * v1, b2 = bw.sw * v2, b3 = bw.se * v3;
      if constexpr (with_taps) {
        o0[i] = cy0 * sy + cx0 * sx;
        o1[i] = cy0 * sy + cx1 * sx;
        o2[i] = cy1 * sy + cx0 * sx;
        o3[i] = cy1 * sy + cx1 * sx;
        m0[i] = v0;
        m1[i] = v1;
        m2[i] = v2;
        m3[i] = v3;
        w0[i] = b0;
        w1[i] = b1;
        w2[i] = b2;
        w3[i] = b3;
        px[i] = tx;
        py[i] = ty;
      }
      if constexpr (with_pairs) {
        // cx0 and cx1 are each bx or bx + 1 (for every x0, in range or not).
        const int32_t bx = std::min(std::max(0, x0i), xpair);
        q0[i] = cy0 * sy + bx;
        q1[i] = cy1 * sy + bx;
        const acc_t l0 = cx0 == bx ? acc_t(1) : acc_t(0);
        const acc_t r1 = cx1 == bx + 1 ? acc_t(1) : acc_t(0);
        nw_left[i] = l0;
        ne_right[i] = r1;
        pw0[i] = b0 * l0 + b1 * (acc_t(1) - r1);
        pw1[i] = b0 * (acc_t(1) - l0) + b1 * r1;
        pw2[i] = b2 * l0 + b3 * (acc_t(1) - r1);
        pw3[i] = b2 * (acc_t(1) - l0) + b3 * r1;
      }
    }
    if constexpr (with_pairs) {
      for (int64_t i = n; i < kBlock && (i % 16) != 0; ++i) {
        q0[i] = q1[i] = 0;
        pw0[i] = pw1[i] = pw2[i] = pw3[i] = acc_t(0);
      }
    }
    if (unplaced != unplaced) poison_block<border, fields>(fx, fy, base_x, base_y, n, t);
  }

  // A coordinate grid_sample cannot place makes its fraction and its pixel's tap weights NaN,
  // as in grid_sample: with zeros padding a NaN or infinite one, with border padding a NaN one
  // (an infinite one clamps to the edge). The blend is then NaN there and, as in grid_sample,
  // the other coordinate's gradient; the taps stay outside, and the source-gradient scatter
  // skips taps outside, so the sources' gradient stays finite.
  template <bool border, TapFields fields>
  void poison_block(const scalar_t* fx, const scalar_t* fy, const acc_t* base_x, acc_t base_y, int64_t n,
                    TapBlock<acc_t>& t) const {
    constexpr bool with_taps = fields != TapFields::kPairs, with_pairs = fields != TapFields::kTaps;
    const acc_t nan = std::numeric_limits<acc_t>::quiet_NaN();
    for (int64_t i = 0; i < n; ++i) {
      const acc_t ix = ax.to_pixel(static_cast<acc_t>(fx[i]) + base_x[i]);
      const acc_t iy = ay.to_pixel(static_cast<acc_t>(fy[i]) + base_y);
      const bool bad_x = border ? ix != ix : !(ix - ix == acc_t(0));
      const bool bad_y = border ? iy != iy : !(iy - iy == acc_t(0));
      if (!bad_x && !bad_y) continue;
      for (int j = 0; j < 4; ++j) {
        if constexpr (with_taps) t.weight[j][i] = nan;
        if constexpr (with_pairs) t.pair_weight[j][i] = nan;
      }
      if constexpr (with_taps) {  // the fractions, read by the gradients of the coordinates
        if (bad_x) t.tx[i] = nan;
        if (bad_y) t.ty[i] = nan;
      }
    }
  }

  // Softmax weights over K for pixels (b, h, x0 .. x0 + n) into w[k * kBlock + i].
  void softmax(int64_t b, int64_t h, int64_t x0, int64_t n, acc_t* w) const {
    if (logits == nullptr) {
      for (int64_t k = 0; k < K; ++k)
        for (int64_t i = 0; i < n; ++i) w[k * kBlock + i] = acc_t(1) / acc_t(K);
      return;
    }
    const int64_t hw = H * W;
    const scalar_t* l = logits + b * K * hw + h * W + x0;
    for (int64_t k = 0; k < K; ++k) prefetch_next_block(l + k * hw + n);
    acc_t m[kBlock], sum[kBlock];
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) m[i] = static_cast<acc_t>(l[i]);
    for (int64_t k = 1; k < K; ++k)
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) {
        const acc_t v = static_cast<acc_t>(l[k * hw + i]);
        m[i] = v > m[i] ? v : m[i];
      }
    for (int64_t i = 0; i < n; ++i) sum[i] = acc_t(0);
    for (int64_t k = 0; k < K; ++k)
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) {
        const acc_t e = exp_nonpositive(static_cast<acc_t>(l[k * hw + i]) - m[i]);
        w[k * kBlock + i] = e;
        sum[i] += e;
      }
    for (int64_t k = 0; k < K; ++k)
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) w[k * kBlock + i] /= sum[i];
  }
};

// Splits rows (b, h) over threads. Rows of one sample scatter into the same source-gradient
// planes, so a call that scatters gives each thread whole samples instead.
template <typename ChunkFn>
void for_row_chunks(int64_t B, int64_t H, int64_t W, bool whole_samples, const ChunkFn& chunk) {
  // ~4k output pixels per task keeps the dispatch overhead small at 128x128.
  const int64_t grain_rows = std::max<int64_t>(1, 4096 / std::max<int64_t>(W, 1));
  if (whole_samples) {
    at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) { chunk(b0 * H, b1 * H); });
  } else {
    at::parallel_for(0, B * H, grain_rows, chunk);
  }
}

// f(std::integral_constant<int, K>()) for K = 1..4: the loops of the loss backward unroll over
// the sources when K is a compile-time constant. Callers handle K > 4 themselves.
template <typename F>
auto with_static_k(int64_t K, const F& f) {
  switch (K) {
    case 1: return f(std::integral_constant<int, 1>());
    case 2: return f(std::integral_constant<int, 2>());
    case 3: return f(std::integral_constant<int, 3>());
    default: return f(std::integral_constant<int, 4>());
  }
}

}  // namespace cpu
}  // namespace FABNET_ISA
}  // namespace fabnet
