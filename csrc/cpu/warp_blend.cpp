// CPU kernels of fabnet::warp_blend, warp_blend_l1 and their backward ops.
//
// One pass over the output pixels: per pixel, the softmax over K logits, the K bilinear tap sets
// (weights computed once and reused for all C channels), the blend and, for the loss, |target -
// blend| summed into a per-row partial. Rows are spread over threads with at::parallel_for; the
// per-sample loss is the sum of its rows' partials in a fixed order, so results do not depend on
// the thread count. The backward recomputes the blend instead of reading a stored one, and skips
// samples whose upstream gradient is zero (the curriculum back-propagates half of each batch).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <array>
#include <cmath>
#include <limits>
#include <tuple>
#include <type_traits>
#include <vector>

#include "../checks.h"
#include "../warp_blend_math.h"
#include "pair_loads.h"

namespace fabnet {
namespace {

// Output pixels are processed in blocks of up to kBlock along a row, in structure-of-arrays
// form, so every per-pixel loop below is a plain `omp simd` loop: the tap gathers become vector
// gathers (vgatherdps) and the softmax uses a polynomial exp the compiler can vectorise. At
// (8, 3, 3, 128, 128) fp32 this took the forward from 17.0 ms to the figures in
// benchmarks/RESULTS.md on one core; the scalar per-pixel version was slower than eager PyTorch.
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
  acc_t poison_x[kBlock], poison_y[kBlock];  // NaN where grid_sample's coordinate is NaN, else 0
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
// at (8, 3, 3, 128, 128) half of taps_impl's samples sat on its first flow loads without this.
// With it the training pass (warp_blend_l1_with_grads + scaling) took 3.70 instead of 4.64 ms
// (2 cores, one process, builds alternated, median of 120 calls); the forward did not change.
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
  // per-tap ones where this call does not read pairs). Filling only the pair fields in the
  // forward took it at (8, 3, 3, 128, 128) from 1.05 to 0.95 ms on 2 cores (medians of 180 calls,
  // builds alternated in one process).
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
    acc_t* __restrict pzx = t.poison_x;
    acc_t* __restrict pzy = t.poison_y;
    const acc_t scale_x = ax.scale, scale_y = ay.scale;
    const Axis<acc_t> axis_x = ax, axis_y = ay;
    const acc_t lo = acc_t(-2), xhi = xmax + acc_t(2), yhi = ymax + acc_t(2), zero = acc_t(0);
    const acc_t nan = std::numeric_limits<acc_t>::quiet_NaN();
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) {
      acc_t ix = axis_x.to_pixel(static_cast<acc_t>(fx[i]) + base_x[i]);
      acc_t iy = axis_y.to_pixel(static_cast<acc_t>(fy[i]) + base_y);
      acc_t dx = scale_x, dy = scale_y;
      // A coordinate grid_sample cannot place makes its fraction NaN, as in grid_sample: with
      // zeros padding a NaN or infinite one (inf - inf is NaN), with border padding a NaN one
      // (an infinite one clamps to the edge). The blend is then NaN, and so is the gradient of
      // the other coordinate; the taps stay outside, so no NaN reaches the source gradient.
      acc_t poison_x, poison_y;
      if constexpr (border) {
        poison_x = ix != ix ? nan : zero;
        poison_y = iy != iy ? nan : zero;
        dx = (ix > zero & ix < xmax) ? dx : zero;  // like grid_sample: clamp, with zero gradient
        dy = (iy > zero & iy < ymax) ? dy : zero;  // on and past the border
        ix = std::min(std::max(zero, ix), xmax);
        iy = std::min(std::max(zero, iy), ymax);
      } else {
        poison_x = ix - ix == zero ? zero : nan;
        poison_y = iy - iy == zero ? zero : nan;
      }
      // Far-away or non-finite points sample nothing; bounding them keeps the int cast defined
      // (std::max(lo, NaN) is lo); the poison is added back to the fractions below.
      px[i] = std::min(std::max(lo, ix), xhi);
      py[i] = std::min(std::max(lo, iy), yhi);
      pzx[i] = poison_x;
      pzy[i] = poison_y;
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
      const acc_t tx = px[i] - fx0 + pzx[i], ty = py[i] - fy0 + pzy[i];
      const int32_t x0i = static_cast<int32_t>(fx0), y0i = static_cast<int32_t>(fy0);
      const int32_t x1i = x0i + 1, y1i = y0i + 1;
      const acc_t vx0 = (x0i >= 0 & x0i <= xlast) ? acc_t(1) : acc_t(0);
      const acc_t vx1 = (x1i >= 0 & x1i <= xlast) ? acc_t(1) : acc_t(0);
      const acc_t vy0 = (y0i >= 0 & y0i <= ylast) ? acc_t(1) : acc_t(0);
      const acc_t vy1 = (y1i >= 0 & y1i <= ylast) ? acc_t(1) : acc_t(0);
      const int32_t cx0 = std::min(std::max(0, x0i), xlast), cx1 = std::min(std::max(0, x1i), xlast);
      const int32_t cy0 = std::min(std::max(0, y0i), ylast), cy1 = std::min(std::max(0, y1i), ylast);
      const acc_t v0 = vx0 * vy0, v1 = vx1 * vy0, v2 = vx0 * vy1, v3 = vx1 * vy1;
      const acc_t ux = acc_t(1) - tx, uy = acc_t(1) - ty;
      const acc_t b0 = ux * uy * v0, b1 = tx * uy * v1, b2 = ux * ty * v2, b3 = tx * ty * v3;
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

#ifdef FABNET_HAVE_PAIR_LOADS
// The forward of one block of n <= kBlock pixels of row (b, h) from x0 with pair loads (float):
// taps, blend per channel 16 pixels at a time, then |target - blend| summed (returned) or the
// blend stored. w: the softmax weights (K x kBlock).
float forward_block_pairs(const Problem<float>& p, TapBlock<float>* taps, const float* w, int64_t b,
                          int64_t h, int64_t x0, int64_t n, const float* target, float* out) {
  const int64_t K = p.K, C = p.C, hw = p.H * p.W;
  for (int64_t k = 0; k < K; ++k) {
    TapBlock<float>& t = taps[k];
    p.taps(b, k, h, x0, n, t, Problem<float>::TapFields::kPairs);
    const float* wk = w + k * kBlock;
    for (int j = 0; j < 4; ++j)
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) t.pair_weight[j][i] *= wk[i];
  }
  __m512 loss = _mm512_setzero_ps();
  for (int64_t c = 0; c < C; ++c) {
    const int64_t at = (b * C + c) * hw + h * p.W + x0;
    if (target != nullptr) prefetch_next_block(target + at + n);
    for (int64_t g = 0; g < n; g += kGroup) {
      __m512 blend = _mm512_setzero_ps();
      for (int64_t k = 0; k < K; ++k) {
        const float* src = p.plane(b, k, c);
        const TapBlock<float>& t = taps[k];
        __m512 left, right;
        load_pairs16(src, t.pair[0] + g, left, right);
        blend = _mm512_fmadd_ps(_mm512_loadu_ps(t.pair_weight[0] + g), left, blend);
        blend = _mm512_fmadd_ps(_mm512_loadu_ps(t.pair_weight[1] + g), right, blend);
        load_pairs16(src, t.pair[1] + g, left, right);
        blend = _mm512_fmadd_ps(_mm512_loadu_ps(t.pair_weight[2] + g), left, blend);
        blend = _mm512_fmadd_ps(_mm512_loadu_ps(t.pair_weight[3] + g), right, blend);
      }
      const __mmask16 lanes = first_lanes(n - g);
      if (target != nullptr) {  // lanes past n: blend 0 (zero weights) and target 0
        const __m512 diff = _mm512_sub_ps(_mm512_maskz_loadu_ps(lanes, target + at + g), blend);
        loss = _mm512_add_ps(loss, _mm512_abs_ps(diff));
      } else {
        _mm512_mask_storeu_ps(out + at + g, lanes, blend);
      }
    }
  }
  return _mm512_reduce_add_ps(loss);
}
#endif

// Forward. With target == nullptr writes the blend into out (B, C, H, W); otherwise writes
// sum over the row of |target - blend| into row_loss (B * H).
template <typename scalar_t>
void forward_kernel(const Problem<scalar_t>& p, const scalar_t* target, scalar_t* out,
                    double* row_loss) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t K = p.K, C = p.C, H = p.H, W = p.W, hw = H * W;
  for_row_chunks(p.B, H, W, /*whole_samples=*/false, [&](int64_t r0, int64_t r1) {
    std::vector<TapBlock<acc_t>> taps(K);
    std::vector<acc_t> w(K * kBlock);
    acc_t blend[kBlock];
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t b = r / H, h = r % H;
      acc_t loss = 0;
      for (int64_t x0 = 0; x0 < W; x0 += kBlock) {
        const int64_t n = std::min(kBlock, W - x0);
        p.softmax(b, h, x0, n, w.data());
#ifdef FABNET_HAVE_PAIR_LOADS
        if constexpr (std::is_same<scalar_t, float>::value) {
          if (p.pairs) {
            loss += forward_block_pairs(p, taps.data(), w.data(), b, h, x0, n, target, out);
            continue;
          }
        }
#endif
        for (int64_t k = 0; k < K; ++k) {
          TapBlock<acc_t>& t = taps[k];
          p.taps(b, k, h, x0, n, t);
          const acc_t* wk = w.data() + k * kBlock;
          for (int j = 0; j < 4; ++j)
#pragma omp simd
            for (int64_t i = 0; i < n; ++i) t.weight[j][i] *= wk[i];
        }
        for (int64_t c = 0; c < C; ++c) {
          for (int64_t i = 0; i < n; ++i) blend[i] = acc_t(0);
          for (int64_t k = 0; k < K; ++k) {
            const scalar_t* src = p.plane(b, k, c);
            const TapBlock<acc_t>& t = taps[k];
#pragma omp simd
            for (int64_t i = 0; i < n; ++i)
              blend[i] += t.weight[0][i] * static_cast<acc_t>(src[t.offset[0][i]]) +
                          t.weight[1][i] * static_cast<acc_t>(src[t.offset[1][i]]) +
                          t.weight[2][i] * static_cast<acc_t>(src[t.offset[2][i]]) +
                          t.weight[3][i] * static_cast<acc_t>(src[t.offset[3][i]]);
          }
          const int64_t at = (b * C + c) * hw + h * W + x0;
          if (target != nullptr) {
            const scalar_t* tg = target + at;
#pragma omp simd reduction(+ : loss)
            for (int64_t i = 0; i < n; ++i) loss += std::abs(static_cast<acc_t>(tg[i]) - blend[i]);
          } else {
#pragma omp simd
            for (int64_t i = 0; i < n; ++i) out[at + i] = static_cast<scalar_t>(blend[i]);
          }
        }
      }
      if (row_loss != nullptr) row_loss[r] = static_cast<double>(loss);
    }
  });
}

// One channel of the loss backward for K (= KC) known at compile time, in one loop: per pixel,
// gather the 4 K taps, blend them, take the upstream u = scale * sign(blend - target), and add
// u * tap into the per-tap sums S (K x 4 rows of kBlock). Returns the channel's sum of
// |target - blend| over the n pixels and writes u.
// The generic path below does the same in four loops (gather into a buffer, blend, u, S); this
// one keeps taps and blend in registers, which took the loss backward op at (8, 3, 3, 128, 128)
// fp32 from ~7.3 to ~6.3 ms on one core (a noisy shared machine; minimum of 25 rounds). float32
// on AVX-512 builds takes loss_channel_pairs instead; this serves the other dtypes and builds.
template <int KC, typename scalar_t, typename acc_t>
acc_t loss_channel(const Problem<scalar_t>& p, const TapBlock<acc_t>* taps, const acc_t* w,
                   int64_t b, int64_t c, int64_t n, const scalar_t* tg, acc_t scale,
                   acc_t* __restrict u, acc_t* __restrict S) {
  const scalar_t* src[KC];
  for (int k = 0; k < KC; ++k) src[k] = p.plane(b, k, c);
  acc_t loss = 0;
#pragma omp simd reduction(+ : loss)
  for (int64_t i = 0; i < n; ++i) {
    acc_t v[KC][4];
    acc_t blend = 0;
#pragma GCC unroll 4
    for (int k = 0; k < KC; ++k) {
      const TapBlock<acc_t>& t = taps[k];
#pragma GCC unroll 4
      for (int j = 0; j < 4; ++j) v[k][j] = static_cast<acc_t>(src[k][t.offset[j][i]]);
      blend += w[k * kBlock + i] * (t.weight[0][i] * v[k][0] + t.weight[1][i] * v[k][1] +
                                    t.weight[2][i] * v[k][2] + t.weight[3][i] * v[k][3]);
    }
    const acc_t diff = blend - static_cast<acc_t>(tg[i]);
    const acc_t uu = diff > acc_t(0) ? scale : (diff < acc_t(0) ? -scale : acc_t(0));
    u[i] = uu;
    loss += std::abs(diff);
#pragma GCC unroll 4
    for (int k = 0; k < KC; ++k)
#pragma GCC unroll 4
      for (int j = 0; j < 4; ++j) S[(k * 4 + j) * kBlock + i] += uu * v[k][j];
  }
  return loss;
}

#ifdef FABNET_HAVE_PAIR_LOADS
// loss_channel with pair loads (float, Problem::pairs). S then holds per-pair sums, rows
// (k * 4 + m) for m = left y0, right y0, left y1, right y1; pair_sums_to_tap_sums turns them into
// the per-tap sums once all channels are in.
template <int KC>
float loss_channel_pairs(const Problem<float>& p, const TapBlock<float>* taps, const float* w,
                         int64_t b, int64_t c, int64_t n, const float* tg, float scale,
                         float* __restrict u, float* __restrict S) {
  const float* src[KC];
  for (int k = 0; k < KC; ++k) src[k] = p.plane(b, k, c);
  const __m512 zero = _mm512_setzero_ps(), plus = _mm512_set1_ps(scale), minus = _mm512_set1_ps(-scale);
  __m512 loss = zero;
  for (int64_t g = 0; g < n; g += kGroup) {
    __m512 v[KC][4];
    __m512 blend = zero;
    for (int k = 0; k < KC; ++k) {
      const TapBlock<float>& t = taps[k];
      load_pairs16(src[k], t.pair[0] + g, v[k][0], v[k][1]);
      load_pairs16(src[k], t.pair[1] + g, v[k][2], v[k][3]);
      __m512 value = _mm512_mul_ps(_mm512_loadu_ps(t.pair_weight[0] + g), v[k][0]);
      value = _mm512_fmadd_ps(_mm512_loadu_ps(t.pair_weight[1] + g), v[k][1], value);
      value = _mm512_fmadd_ps(_mm512_loadu_ps(t.pair_weight[2] + g), v[k][2], value);
      value = _mm512_fmadd_ps(_mm512_loadu_ps(t.pair_weight[3] + g), v[k][3], value);
      blend = _mm512_fmadd_ps(_mm512_loadu_ps(w + k * kBlock + g), value, blend);
    }
    // Lanes past n: blend 0 (zero pair weights), target 0, so u = 0 and nothing accumulates.
    const __m512 diff = _mm512_sub_ps(blend, _mm512_maskz_loadu_ps(first_lanes(n - g), tg + g));
    __m512 uu = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(diff, zero, _CMP_GT_OQ), zero, plus);
    uu = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(diff, zero, _CMP_LT_OQ), uu, minus);
    _mm512_storeu_ps(u + g, uu);
    loss = _mm512_add_ps(loss, _mm512_abs_ps(diff));
    for (int k = 0; k < KC; ++k)
      for (int m = 0; m < 4; ++m) {
        float* s = S + (k * 4 + m) * kBlock + g;
        _mm512_storeu_ps(s, _mm512_fmadd_ps(uu, v[k][m], _mm512_loadu_ps(s)));
      }
  }
  return _mm512_reduce_add_ps(loss);
}
#endif

// Per-pair sums (left y0, right y0, left y1, right y1) to per-tap sums (nw, ne, sw, se) in S.
template <typename acc_t>
void pair_sums_to_tap_sums(const TapBlock<acc_t>& t, int64_t n, acc_t* S) {
  acc_t* __restrict s0 = S;
  acc_t* __restrict s1 = S + kBlock;
  acc_t* __restrict s2 = S + 2 * kBlock;
  acc_t* __restrict s3 = S + 3 * kBlock;
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const acc_t l0 = s0[i], r0 = s1[i], l1 = s2[i], r1 = s3[i];
    const bool nw_left = t.nw_is_left[i] != acc_t(0), ne_right = t.ne_is_right[i] != acc_t(0);
    s0[i] = nw_left ? l0 : r0;
    s1[i] = ne_right ? r0 : l0;
    s2[i] = nw_left ? l1 : r1;
    s3[i] = ne_right ? r1 : l1;
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

// Gradient outputs of one backward call; nullptr where not requested.
template <typename scalar_t>
struct Grads {
  using acc_t = at::opmath_type<scalar_t>;
  acc_t* sources = nullptr;     // (B, K, C, Hs, Ws) contiguous accumulation buffer, zero-initialised
  scalar_t* flows = nullptr;    // (B, K, 2, H, W)
  scalar_t* logits = nullptr;   // (B, K, H, W)
  scalar_t* target = nullptr;   // (B, C, H, W)
};

// Backward. Upstream is either grad_blend (B, C, H, W) or, for the loss, grad_loss (B,) with the
// target; the upstream of pixel channel c is then grad_loss[b] / (C H W) * sign(blend - target).
//
// The weight gradients need, per source k, sum_c u_c * (value, d value / dx, d value / dy) of the
// sampled point. All three are linear in the four tap values with weights that do not depend on
// c, so the kernel accumulates only S_kj = sum_c u_c * tap_j(k, c) (four multiply-adds per tap
// set and channel) and forms the three sums once per source from S. The tap values of a channel
// are kept in a small buffer between the blend (which needs every source before u_c is known)
// and the accumulation, so each source pixel is gathered once, as in the forward.
//
// With row_loss the kernel also writes the forward's per-row sums of |target - blend| (as
// forward_kernel does): the training forward (warp_blend_l1_with_grads) runs this kernel once
// with grad_loss = 1 and so gathers every source pixel once for the loss and its gradients.
template <typename scalar_t>
void backward_kernel(const Problem<scalar_t>& p, const scalar_t* grad_blend,
                     const scalar_t* grad_loss, const scalar_t* target, const Grads<scalar_t>& g,
                     double* row_loss = nullptr) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t K = p.K, C = p.C, H = p.H, W = p.W, hw = H * W;
  const int64_t src_plane = p.ay.size * p.ax.size;
  const acc_t inv_n = acc_t(1) / acc_t(C * hw);
  const bool need_weight_grads = g.flows != nullptr || g.logits != nullptr;
  // The loss backward below reads taps as pairs (loss_channel_pairs) exactly when this holds.
  const bool loss_pairs = grad_loss != nullptr && K <= 4 && p.pairs;
  // The gradients read the per-tap fields; the pair fields only the pair loops.
  const auto tap_fields = loss_pairs ? Problem<scalar_t>::TapFields::kBoth : Problem<scalar_t>::TapFields::kTaps;
  for_row_chunks(p.B, H, W, /*whole_samples=*/g.sources != nullptr, [&](int64_t r0, int64_t r1) {
    std::vector<TapBlock<acc_t>> taps(K);
    // Per block: softmax weights and dL/dw (K), one channel's tap values (K x 4), the per-tap
    // upstream sums S (K x 4) and the C upstream rows.
    std::vector<acc_t> w(K * kBlock), dw(K * kBlock), tap(K * 4 * kBlock), S(K * 4 * kBlock),
        up(C * kBlock);
    acc_t blend[kBlock];
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t b = r / H, h = r % H;
      const acc_t loss_scale =
          grad_loss != nullptr ? static_cast<acc_t>(grad_loss[b]) * inv_n : acc_t(0);
      acc_t loss = 0;
      if (grad_loss != nullptr && loss_scale == acc_t(0) && row_loss == nullptr) {
        // Nothing flows back through this sample: write zeros, touch no source pixel.
        for (int64_t k = 0; k < K; ++k) {
          if (g.flows)
            for (int64_t d = 0; d < 2; ++d)
              std::fill_n(g.flows + ((b * K + k) * 2 + d) * hw + h * W, W, scalar_t(0));
          if (g.logits) std::fill_n(g.logits + (b * K + k) * hw + h * W, W, scalar_t(0));
        }
        if (g.target)
          for (int64_t c = 0; c < C; ++c)
            std::fill_n(g.target + (b * C + c) * hw + h * W, W, scalar_t(0));
        continue;
      }
      for (int64_t x0 = 0; x0 < W; x0 += kBlock) {
        const int64_t n = std::min(kBlock, W - x0), pix = h * W + x0;
        p.softmax(b, h, x0, n, w.data());
        for (int64_t k = 0; k < K; ++k) p.taps(b, k, h, x0, n, taps[k], tap_fields);
        std::fill(S.begin(), S.end(), acc_t(0));
        for (int64_t c = 0; c < C; ++c) {
          if (grad_loss != nullptr && K <= 4) {  // the common case, with K known at compile time
            acc_t* __restrict u = up.data() + c * kBlock;
            const int64_t at = (b * C + c) * hw + pix;
            const scalar_t* tg = target + at;
            prefetch_next_block(tg + n);
            const TapBlock<acc_t>* tb = taps.data();
            loss += with_static_k(K, [&](auto k_constant) {
              constexpr int KC = decltype(k_constant)::value;
#ifdef FABNET_HAVE_PAIR_LOADS
              if constexpr (std::is_same<scalar_t, float>::value) {
                if (loss_pairs) return loss_channel_pairs<KC>(p, tb, w.data(), b, c, n, tg, loss_scale, u, S.data());
              }
#endif
              return loss_channel<KC>(p, tb, w.data(), b, c, n, tg, loss_scale, u, S.data());
            });
            if (g.target)
#pragma omp simd
              for (int64_t i = 0; i < n; ++i) g.target[at + i] = static_cast<scalar_t>(-u[i]);
            continue;
          }
          // Recompute the blend of channel c, keeping the raw tap values.
          for (int64_t i = 0; i < n; ++i) blend[i] = acc_t(0);
          for (int64_t k = 0; k < K; ++k) {
            const scalar_t* src = p.plane(b, k, c);
            const TapBlock<acc_t>& t = taps[k];
            const acc_t* wk = w.data() + k * kBlock;
            acc_t* __restrict v0 = tap.data() + (k * 4 + 0) * kBlock;
            acc_t* __restrict v1 = tap.data() + (k * 4 + 1) * kBlock;
            acc_t* __restrict v2 = tap.data() + (k * 4 + 2) * kBlock;
            acc_t* __restrict v3 = tap.data() + (k * 4 + 3) * kBlock;
#pragma omp simd
            for (int64_t i = 0; i < n; ++i) {
              v0[i] = static_cast<acc_t>(src[t.offset[0][i]]);
              v1[i] = static_cast<acc_t>(src[t.offset[1][i]]);
              v2[i] = static_cast<acc_t>(src[t.offset[2][i]]);
              v3[i] = static_cast<acc_t>(src[t.offset[3][i]]);
              blend[i] += wk[i] * (t.weight[0][i] * v0[i] + t.weight[1][i] * v1[i] +
                                   t.weight[2][i] * v2[i] + t.weight[3][i] * v3[i]);
            }
          }
          acc_t* __restrict u = up.data() + c * kBlock;
          const int64_t at = (b * C + c) * hw + pix;
          if (grad_loss != nullptr) {
            const scalar_t* tg = target + at;
#pragma omp simd reduction(+ : loss)
            for (int64_t i = 0; i < n; ++i) {
              const acc_t diff = blend[i] - static_cast<acc_t>(tg[i]);
              u[i] = diff > acc_t(0) ? loss_scale : (diff < acc_t(0) ? -loss_scale : acc_t(0));
              loss += std::abs(diff);
            }
            if (g.target)
#pragma omp simd
              for (int64_t i = 0; i < n; ++i) g.target[at + i] = static_cast<scalar_t>(-u[i]);
          } else {
#pragma omp simd
            for (int64_t i = 0; i < n; ++i) u[i] = static_cast<acc_t>(grad_blend[at + i]);
          }
          if (need_weight_grads)
            for (int64_t j = 0; j < 4 * K; ++j) {
              acc_t* __restrict s = S.data() + j * kBlock;
              const acc_t* __restrict v = tap.data() + j * kBlock;
#pragma omp simd
              for (int64_t i = 0; i < n; ++i) s[i] += u[i] * v[i];
            }
        }
        if (loss_pairs)
          for (int64_t k = 0; k < K; ++k) pair_sums_to_tap_sums(taps[k], n, S.data() + k * 4 * kBlock);
        if (need_weight_grads) {
          for (int64_t k = 0; k < K; ++k) {
            const TapBlock<acc_t>& t = taps[k];
            const acc_t* wk = w.data() + k * kBlock;
            const acc_t* s0 = S.data() + (k * 4 + 0) * kBlock;
            const acc_t* s1 = S.data() + (k * 4 + 1) * kBlock;
            const acc_t* s2 = S.data() + (k * 4 + 2) * kBlock;
            const acc_t* s3 = S.data() + (k * 4 + 3) * kBlock;
            acc_t* __restrict dwk = dw.data() + k * kBlock;
            // dL/dw_k: the bilinear value of the upstream-weighted taps (weights include validity).
#pragma omp simd
            for (int64_t i = 0; i < n; ++i)
              dwk[i] = t.weight[0][i] * s0[i] + t.weight[1][i] * s1[i] + t.weight[2][i] * s2[i] +
                       t.weight[3][i] * s3[i];
            if (g.flows) {
              scalar_t* gfx = g.flows + (b * K + k) * 2 * hw + pix;
              scalar_t* gfy = gfx + hw;
              prefetch_next_block(gfx + n);
              prefetch_next_block(gfy + n);
#pragma omp simd
              for (int64_t i = 0; i < n; ++i) {
                const acc_t a0 = t.valid[0][i] * s0[i], a1 = t.valid[1][i] * s1[i];
                const acc_t a2 = t.valid[2][i] * s2[i], a3 = t.valid[3][i] * s3[i];
                const acc_t ux = acc_t(1) - t.tx[i], uy = acc_t(1) - t.ty[i];
                const acc_t gxs = uy * (a1 - a0) + t.ty[i] * (a3 - a2);
                const acc_t gys = ux * (a2 - a0) + t.tx[i] * (a3 - a1);
                gfx[i] = static_cast<scalar_t>(wk[i] * gxs * t.dx[i]);
                gfy[i] = static_cast<scalar_t>(wk[i] * gys * t.dy[i]);
              }
            }
          }
          if (g.logits) {
            acc_t weighted[kBlock];  // sum_k w_k dL/dw_k, the softmax Jacobian's shared term
            for (int64_t i = 0; i < n; ++i) weighted[i] = acc_t(0);
            for (int64_t k = 0; k < K; ++k)
#pragma omp simd
              for (int64_t i = 0; i < n; ++i) weighted[i] += w[k * kBlock + i] * dw[k * kBlock + i];
            for (int64_t k = 0; k < K; ++k) {
              scalar_t* gl = g.logits + (b * K + k) * hw + pix;
              prefetch_next_block(gl + n);
#pragma omp simd
              for (int64_t i = 0; i < n; ++i)
                gl[i] = static_cast<scalar_t>(w[k * kBlock + i] * (dw[k * kBlock + i] - weighted[i]));
            }
          }
        }
        if (g.sources) {  // scatter; one thread owns each sample, so no atomics are needed
          for (int64_t k = 0; k < K; ++k) {
            const TapBlock<acc_t>& t = taps[k];
            for (int64_t c = 0; c < C; ++c) {
              acc_t* plane = g.sources + ((b * K + k) * C + c) * src_plane;
              const acc_t* u = up.data() + c * kBlock;
              for (int64_t i = 0; i < n; ++i) {
                const acc_t gw = w[k * kBlock + i] * u[i];
                // Taps outside add nothing, even where a NaN fraction made their weight NaN
                // (their offsets are clamped onto real pixels).
                for (int j = 0; j < 4; ++j)
                  plane[t.offset[j][i]] += t.valid[j][i] != acc_t(0) ? gw * t.weight[j][i] : acc_t(0);
              }
            }
          }
        }
      }
      if (row_loss != nullptr) row_loss[r] = static_cast<double>(loss);
    }
  });
}

at::Tensor empty_grad(const at::Tensor& like) { return at::empty({0}, like.options()); }

// loss[b] = (sum of sample b's H row partials, in row order) / count, so the result does not
// depend on how rows were spread over threads.
at::Tensor& reduce_row_loss(const std::vector<double>& row_loss, at::Tensor& loss, int64_t count) {
  const int64_t B = loss.size(0), H = static_cast<int64_t>(row_loss.size()) / std::max<int64_t>(B, 1);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, loss.scalar_type(), "reduce_row_loss", [&] {
    scalar_t* out = loss.data_ptr<scalar_t>();
    for (int64_t b = 0; b < B; ++b) {
      double sum = 0;
      for (int64_t h = 0; h < H; ++h) sum += row_loss[b * H + h];
      out[b] = static_cast<scalar_t>(sum / static_cast<double>(count));
    }
  });
  return loss;
}

at::Tensor warp_blend_cpu(const at::Tensor& sources, const at::Tensor& flows,
                          const c10::optional<at::Tensor>& logits, bool residual,
                          c10::string_view padding_mode, bool align_corners) {
  check_warp_blend_args(sources, flows, logits, nullptr);
  const Padding pad = parse_padding(std::string(padding_mode));
  const auto B = sources.size(0), C = sources.size(2), H = flows.size(3), W = flows.size(4);
  at::Tensor out = at::empty({B, C, H, W}, sources.options());
  if (out.numel() == 0) return out;
  const at::Tensor f = flows.contiguous();
  const c10::optional<at::Tensor> l = logits ? c10::optional<at::Tensor>(logits->contiguous()) : c10::nullopt;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, sources.scalar_type(), "warp_blend_cpu", [&] {
    Problem<scalar_t> p(sources, f, l ? &*l : nullptr, pad, residual, align_corners);
    forward_kernel<scalar_t>(p, nullptr, out.data_ptr<scalar_t>(), nullptr);
  });
  return out;
}

at::Tensor warp_blend_l1_cpu(const at::Tensor& sources, const at::Tensor& flows,
                             const c10::optional<at::Tensor>& logits, const at::Tensor& target,
                             bool residual, c10::string_view padding_mode, bool align_corners) {
  check_warp_blend_args(sources, flows, logits, &target);
  const Padding pad = parse_padding(std::string(padding_mode));
  const auto B = sources.size(0), C = sources.size(2), H = flows.size(3), W = flows.size(4);
  at::Tensor loss = at::empty({B}, sources.options());
  if (B == 0) return loss;
  if (C * H * W == 0) return loss.fill_(std::numeric_limits<double>::quiet_NaN());  // mean of nothing
  const at::Tensor f = flows.contiguous(), t = target.contiguous();
  const c10::optional<at::Tensor> l = logits ? c10::optional<at::Tensor>(logits->contiguous()) : c10::nullopt;
  std::vector<double> row_loss(B * H);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, sources.scalar_type(), "warp_blend_l1_cpu", [&] {
    Problem<scalar_t> p(sources, f, l ? &*l : nullptr, pad, residual, align_corners);
    forward_kernel<scalar_t>(p, t.data_ptr<scalar_t>(), nullptr, row_loss.data());
  });
  return reduce_row_loss(row_loss, loss, C * H * W);
}

// Shared by both backward ops and the training forward: allocates the requested gradients and
// runs the kernel (with row_loss, also the loss's row partials; left untouched when the problem
// is empty).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> backward_cpu(
    const at::Tensor* grad_blend, const at::Tensor* grad_loss, const at::Tensor& sources_in,
    const at::Tensor& flows, const c10::optional<at::Tensor>& logits, const at::Tensor* target,
    bool residual, Padding pad, bool align_corners, std::array<bool, 4> mask,
    std::vector<double>* row_loss = nullptr) {
  const bool need_logits = mask[2] && logits.has_value();
  // The scatter writes gradient planes at the offsets computed from the source strides.
  const at::Tensor sources = mask[0] ? sources_in.contiguous() : sources_in;
  // Half-precision source gradients accumulate in a float32 buffer, cast once at the end.
  const auto acc_dtype = at::toOpMathType(sources.scalar_type());
  at::Tensor gs_acc = mask[0] ? at::zeros(sources.sizes(), sources.options().dtype(acc_dtype)) : at::Tensor();
  at::Tensor gf = mask[1] ? at::empty(flows.sizes(), flows.options()) : empty_grad(flows);
  at::Tensor gl = need_logits ? at::empty(logits->sizes(), logits->options()) : empty_grad(sources);
  at::Tensor gt = (mask[3] && target) ? at::empty(target->sizes(), target->options()) : empty_grad(sources);
  if (flows.size(0) == 0 || flows.size(3) * flows.size(4) == 0 || sources.size(2) == 0)
    return {mask[0] ? gs_acc.to(sources.scalar_type()) : empty_grad(sources), gf.zero_(), gl.zero_(),
            gt.zero_()};
  const at::Tensor f = flows.contiguous();
  const c10::optional<at::Tensor> l = logits ? c10::optional<at::Tensor>(logits->contiguous()) : c10::nullopt;
  const at::Tensor gb = grad_blend ? grad_blend->contiguous() : at::Tensor();
  const at::Tensor glo = grad_loss ? grad_loss->contiguous() : at::Tensor();
  const at::Tensor t = target ? target->contiguous() : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, sources.scalar_type(), "warp_blend_backward_cpu", [&] {
    Problem<scalar_t> p(sources, f, l ? &*l : nullptr, pad, residual, align_corners);
    Grads<scalar_t> g;
    if (mask[0]) g.sources = gs_acc.data_ptr<at::opmath_type<scalar_t>>();
    if (mask[1]) g.flows = gf.data_ptr<scalar_t>();
    if (need_logits) g.logits = gl.data_ptr<scalar_t>();
    if (mask[3] && target) g.target = gt.data_ptr<scalar_t>();
    backward_kernel<scalar_t>(p, grad_blend ? gb.data_ptr<scalar_t>() : nullptr,
                              grad_loss ? glo.data_ptr<scalar_t>() : nullptr,
                              target ? t.data_ptr<scalar_t>() : nullptr, g,
                              row_loss ? row_loss->data() : nullptr);
  });
  at::Tensor gs = mask[0] ? gs_acc.to(sources.scalar_type()) : empty_grad(sources);
  return {gs, gf, gl, gt};
}

// The training forward: the per-sample loss and, in the same pass over the sources, the
// gradients of loss[b] with respect to flows[b] and logits[b] (the "unit" gradients; the backward
// only scales them by the upstream gradient): the loss backward with an upstream of 1 that also
// writes the row partials of the loss. Sources and target get no gradient here.
// At (8, 3, 3, 128, 128) fp32 on 2 cores (one process, builds alternated, minimum of 30 rounds)
// forward op + backward op took 3.46 ms, this op + the in-place scaling 1.97 ms.
std::tuple<at::Tensor, at::Tensor, at::Tensor> warp_blend_l1_with_grads_cpu(
    const at::Tensor& sources, const at::Tensor& flows, const c10::optional<at::Tensor>& logits,
    const at::Tensor& target, bool residual, c10::string_view padding_mode, bool align_corners,
    std::array<bool, 2> mask) {
  check_warp_blend_args(sources, flows, logits, &target);
  const auto B = sources.size(0), C = sources.size(2), H = flows.size(3), W = flows.size(4);
  const at::Tensor ones = at::ones({B}, sources.options());
  std::vector<double> row_loss(B * H);
  auto grads = backward_cpu(nullptr, &ones, sources, flows, logits, &target, residual,
                            parse_padding(std::string(padding_mode)), align_corners,
                            {false, mask[0], mask[1], false}, &row_loss);
  const at::Tensor& gf = std::get<1>(grads);
  const at::Tensor& gl = std::get<2>(grads);
  at::Tensor loss = at::empty({B}, sources.options());
  if (B == 0) return {loss, gf, gl};
  if (C * H * W == 0) return {loss.fill_(std::numeric_limits<double>::quiet_NaN()), gf, gl};  // mean of nothing
  return {reduce_row_loss(row_loss, loss, C * H * W), gf, gl};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> warp_blend_backward_cpu(
    const at::Tensor& grad, const at::Tensor& sources, const at::Tensor& flows,
    const c10::optional<at::Tensor>& logits, bool residual, c10::string_view padding_mode,
    bool align_corners, std::array<bool, 3> mask) {
  check_warp_blend_args(sources, flows, logits, nullptr);
  TORCH_CHECK(grad.dim() == 4 && grad.size(0) == sources.size(0) && grad.size(1) == sources.size(2) &&
                  grad.size(2) == flows.size(3) && grad.size(3) == flows.size(4),
              "grad must have the blend's shape (B, C, H, W); got ", grad.sizes());
  TORCH_CHECK(grad.scalar_type() == sources.scalar_type(), "grad must have the dtype of sources");
  auto [gs, gf, gl, gt] = backward_cpu(&grad, nullptr, sources, flows, logits, nullptr, residual,
                                       parse_padding(std::string(padding_mode)), align_corners,
                                       {mask[0], mask[1], mask[2], false});
  return {gs, gf, gl};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> warp_blend_l1_backward_cpu(
    const at::Tensor& grad, const at::Tensor& sources, const at::Tensor& flows,
    const c10::optional<at::Tensor>& logits, const at::Tensor& target, bool residual,
    c10::string_view padding_mode, bool align_corners, std::array<bool, 4> mask) {
  check_warp_blend_args(sources, flows, logits, &target);
  TORCH_CHECK(grad.dim() == 1 && grad.size(0) == sources.size(0),
              "grad must have the loss's shape (B,) with B=", sources.size(0), "; got ", grad.sizes());
  TORCH_CHECK(grad.scalar_type() == sources.scalar_type(), "grad must have the dtype of sources");
  return backward_cpu(nullptr, &grad, sources, flows, logits, &target, residual,
                      parse_padding(std::string(padding_mode)), align_corners, mask);
}

}  // namespace

TORCH_LIBRARY_IMPL(fabnet, CPU, m) {
  m.impl("warp_blend", &warp_blend_cpu);
  m.impl("warp_blend_backward", &warp_blend_backward_cpu);
  m.impl("warp_blend_l1", &warp_blend_l1_cpu);
  m.impl("warp_blend_l1_backward", &warp_blend_l1_backward_cpu);
  m.impl("warp_blend_l1_with_grads", &warp_blend_l1_with_grads_cpu);
}

}  // namespace fabnet
