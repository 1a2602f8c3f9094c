// The forward kernel: the blend, or the loss's per-row sums of |target - blend|, block by block.
// Included by csrc/cpu/warp_blend.cpp only.
#pragma once

#include "problem.h"

namespace fabnet {
inline namespace FABNET_ISA {
namespace cpu {

#ifdef FABNET_HAVE_PAIR_LOADS
// The forward of one block of n <= kBlock pixels of row (b, h) from x0 with pair loads (float):
// taps, blend per channel 16 pixels at a time, then |target - blend| summed (returned) or the
// blend stored. w: the softmax weights (K x kBlock).
inline float forward_block_pairs(const Problem<float>& p, TapBlock<float>* taps, const float* w, int64_t b,
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

}  // namespace cpu
}  // namespace FABNET_ISA
}  // namespace fabnet
