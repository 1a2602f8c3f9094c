// The backward kernels: the loss backward's per-channel bodies (register-resident for K <= 4, pair
// loads on AVX-512) and the backward pass that serves both backward ops and the training forward.
// Included by csrc/cpu/warp_blend.cpp only.
#pragma once

#include "problem.h"

namespace fabnet {
inline namespace FABNET_ISA {
namespace cpu {

// One channel of the loss backward for K (= KC) known at compile time, in one loop: per pixel,
// gather the 4 K taps, blend them, take the upstream u = scale * sign(blend - target), and add
// u * tap into the per-tap sums S (K x 4 rows of kBlock). Returns the channel's sum of
// |target - blend| over the n pixels and writes u.
// The generic path below does the same in four loops (gather into a buffer, blend, u, S); this
// one keeps taps and blend in registers (a seventh faster, docs/perf/cpu-kernel.md). float32 on
// AVX-512 builds takes loss_channel_pairs instead; this serves the other dtypes and builds.
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

}  // namespace cpu
}  // namespace FABNET_ISA
}  // namespace fabnet
