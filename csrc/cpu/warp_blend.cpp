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
#include <array>
#include <cmath>
#include <limits>
#include <tuple>
#include <vector>

#include "../checks.h"
#include "../warp_blend_math.h"

namespace fabnet {
namespace {

// Everything a row needs to know about one call. Flows, logits, target and upstream gradients
// are made contiguous by the caller; sources keep their own strides (a permuted source batch is
// read in place rather than copied).
template <typename scalar_t>
struct Problem {
  using acc_t = at::opmath_type<scalar_t>;
  const scalar_t* sources;
  int64_t src_b, src_k, src_c, src_y, src_x;
  const scalar_t* flows;   // (B, K, 2, H, W)
  const scalar_t* logits;  // (B, K, H, W) or nullptr for equal weights
  int64_t B, K, C, H, W;
  Axis<acc_t> ax, ay;
  Padding padding;
  bool residual;

  Problem(const at::Tensor& s, const at::Tensor& f, const at::Tensor* l, Padding pad, bool res,
          bool align_corners)
      : sources(s.data_ptr<scalar_t>()),
        src_b(s.stride(0)), src_k(s.stride(1)), src_c(s.stride(2)), src_y(s.stride(3)),
        src_x(s.stride(4)),
        flows(f.data_ptr<scalar_t>()),
        logits(l ? l->data_ptr<scalar_t>() : nullptr),
        B(s.size(0)), K(s.size(1)), C(s.size(2)), H(f.size(3)), W(f.size(4)),
        ax(Axis<acc_t>::make(s.size(4), f.size(4), align_corners)),
        ay(Axis<acc_t>::make(s.size(3), f.size(3), align_corners)),
        padding(pad),
        residual(res) {}

  const scalar_t* plane(int64_t b, int64_t k, int64_t c) const {
    return sources + b * src_b + k * src_k + c * src_c;
  }

  // Softmax weights w[0..K) and tap sets taps[0..K) of output pixel (b, h, x).
  void prepare(int64_t b, int64_t h, int64_t x, acc_t* w, Taps<acc_t>* taps) const {
    const int64_t hw = H * W, pix = h * W + x;
    if (logits != nullptr) {
      const scalar_t* l = logits + b * K * hw + pix;
      acc_t m = -std::numeric_limits<acc_t>::infinity();
      for (int64_t k = 0; k < K; ++k) {
        w[k] = static_cast<acc_t>(l[k * hw]);
        m = std::max(m, w[k]);
      }
      acc_t sum = 0;
      for (int64_t k = 0; k < K; ++k) {
        w[k] = std::exp(w[k] - m);
        sum += w[k];
      }
      const acc_t inv = acc_t(1) / sum;
      for (int64_t k = 0; k < K; ++k) w[k] *= inv;
    } else {
      for (int64_t k = 0; k < K; ++k) w[k] = acc_t(1) / acc_t(K);
    }
    const acc_t base_x = residual ? ax.identity(x) : acc_t(0);
    const acc_t base_y = residual ? ay.identity(h) : acc_t(0);
    for (int64_t k = 0; k < K; ++k) {
      const scalar_t* f = flows + (b * K + k) * 2 * hw + pix;
      const acc_t gx = static_cast<acc_t>(f[0]) + base_x;
      const acc_t gy = static_cast<acc_t>(f[hw]) + base_y;
      taps[k] = make_taps(gx, gy, ax, ay, padding, src_y, src_x);
    }
  }
};

// Splits rows (b, h) over threads. Rows of one sample scatter into the same source-gradient
// planes, so a call that scatters gives each thread whole samples instead.
template <typename RowFn>
void for_each_row(int64_t B, int64_t H, int64_t W, bool whole_samples, const RowFn& row) {
  // ~4k output pixels per task keeps the dispatch overhead under 1% at 128x128 (measured).
  const int64_t grain_rows = std::max<int64_t>(1, 4096 / std::max<int64_t>(W, 1));
  if (whole_samples) {
    at::parallel_for(0, B, std::max<int64_t>(1, grain_rows / std::max<int64_t>(H, 1)),
                     [&](int64_t b0, int64_t b1) {
                       for (int64_t b = b0; b < b1; ++b)
                         for (int64_t h = 0; h < H; ++h) row(b, h);
                     });
  } else {
    at::parallel_for(0, B * H, grain_rows, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) row(r / H, r % H);
    });
  }
}

// Forward. With target == nullptr writes the blend into out (B, C, H, W); otherwise writes
// sum over the row of |target - blend| into row_loss (B * H).
template <typename scalar_t>
void forward_kernel(const Problem<scalar_t>& p, const scalar_t* target, scalar_t* out,
                    double* row_loss) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t K = p.K, C = p.C, H = p.H, W = p.W, hw = H * W;
  for_each_row(p.B, H, W, /*whole_samples=*/false, [&](int64_t b, int64_t h) {
    std::vector<acc_t> w(K), blend(C);
    std::vector<Taps<acc_t>> taps(K);
    acc_t loss = 0;
    for (int64_t x = 0; x < W; ++x) {
      p.prepare(b, h, x, w.data(), taps.data());
      std::fill(blend.begin(), blend.end(), acc_t(0));
      for (int64_t k = 0; k < K; ++k)
        for (int64_t c = 0; c < C; ++c) blend[c] += w[k] * sample<acc_t>(p.plane(b, k, c), taps[k]);
      const int64_t at_c0 = b * C * hw + h * W + x;
      if (target != nullptr) {
        for (int64_t c = 0; c < C; ++c)
          loss += std::abs(static_cast<acc_t>(target[at_c0 + c * hw]) - blend[c]);
      } else {
        for (int64_t c = 0; c < C; ++c) out[at_c0 + c * hw] = static_cast<scalar_t>(blend[c]);
      }
    }
    if (row_loss != nullptr) row_loss[b * H + h] = static_cast<double>(loss);
  });
}

// Gradient outputs of one backward call; nullptr where not requested.
template <typename scalar_t>
struct Grads {
  scalar_t* sources = nullptr;  // (B, K, C, Hs, Ws) contiguous, zero-initialised, scattered into
  scalar_t* flows = nullptr;    // (B, K, 2, H, W)
  scalar_t* logits = nullptr;   // (B, K, H, W)
  scalar_t* target = nullptr;   // (B, C, H, W)
};

// Backward. Upstream is either grad_blend (B, C, H, W) or, for the loss, grad_loss (B,) with the
// target; the upstream of pixel channel c is then grad_loss[b] / (C H W) * sign(blend - target).
template <typename scalar_t>
void backward_kernel(const Problem<scalar_t>& p, const scalar_t* grad_blend,
                     const scalar_t* grad_loss, const scalar_t* target, const Grads<scalar_t>& g) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t K = p.K, C = p.C, H = p.H, W = p.W, hw = H * W;
  const int64_t src_plane = p.ay.size * p.ax.size;
  const acc_t inv_n = acc_t(1) / acc_t(C * hw);
  const bool need_weight_grads = g.flows != nullptr || g.logits != nullptr;
  for_each_row(p.B, H, W, /*whole_samples=*/g.sources != nullptr, [&](int64_t b, int64_t h) {
    const acc_t loss_scale =
        grad_loss != nullptr ? static_cast<acc_t>(grad_loss[b]) * inv_n : acc_t(0);
    if (grad_loss != nullptr && loss_scale == acc_t(0)) {
      // Nothing flows back through this sample: write zeros, touch no source pixel.
      for (int64_t k = 0; k < K; ++k) {
        if (g.flows)
          for (int64_t d = 0; d < 2; ++d)
            std::fill_n(g.flows + ((b * K + k) * 2 + d) * hw + h * W, W, scalar_t(0));
        if (g.logits) std::fill_n(g.logits + (b * K + k) * hw + h * W, W, scalar_t(0));
      }
      if (g.target)
        for (int64_t c = 0; c < C; ++c) std::fill_n(g.target + (b * C + c) * hw + h * W, W, scalar_t(0));
      return;
    }
    std::vector<acc_t> w(K), dw(K), blend(C), up(C), val(K * C), d_ix(K * C), d_iy(K * C);
    std::vector<Taps<acc_t>> taps(K);
    for (int64_t x = 0; x < W; ++x) {
      const int64_t pix = h * W + x;
      p.prepare(b, h, x, w.data(), taps.data());
      std::fill(blend.begin(), blend.end(), acc_t(0));
      for (int64_t k = 0; k < K; ++k)
        for (int64_t c = 0; c < C; ++c) {
          const int64_t kc = k * C + c;
          sample_with_grad<acc_t>(p.plane(b, k, c), taps[k], &val[kc], &d_ix[kc], &d_iy[kc]);
          blend[c] += w[k] * val[kc];
        }
      for (int64_t c = 0; c < C; ++c) {
        const int64_t at = (b * C + c) * hw + pix;
        if (grad_loss != nullptr) {
          up[c] = loss_scale * sign_of(blend[c] - static_cast<acc_t>(target[at]));
          if (g.target) g.target[at] = static_cast<scalar_t>(-up[c]);
        } else {
          up[c] = static_cast<acc_t>(grad_blend[at]);
        }
      }
      if (need_weight_grads) {
        acc_t weighted = 0;  // sum_k w_k dL/dw_k, the softmax Jacobian's shared term
        for (int64_t k = 0; k < K; ++k) {
          acc_t gx = 0, gy = 0;
          dw[k] = 0;
          for (int64_t c = 0; c < C; ++c) {
            dw[k] += up[c] * val[k * C + c];
            gx += up[c] * d_ix[k * C + c];
            gy += up[c] * d_iy[k * C + c];
          }
          weighted += w[k] * dw[k];
          if (g.flows) {
            scalar_t* gf = g.flows + (b * K + k) * 2 * hw + pix;
            gf[0] = static_cast<scalar_t>(w[k] * gx * taps[k].dx);
            gf[hw] = static_cast<scalar_t>(w[k] * gy * taps[k].dy);
          }
        }
        if (g.logits)
          for (int64_t k = 0; k < K; ++k)
            g.logits[(b * K + k) * hw + pix] = static_cast<scalar_t>(w[k] * (dw[k] - weighted));
      }
      if (g.sources) {
        for (int64_t k = 0; k < K; ++k)
          for (int64_t c = 0; c < C; ++c) {
            scalar_t* plane = g.sources + ((b * K + k) * C + c) * src_plane;
            const acc_t gw = w[k] * up[c];
            for (int i = 0; i < 4; ++i)
              if (taps[k].valid[i] != acc_t(0))
                plane[taps[k].offset[i]] += static_cast<scalar_t>(gw * taps[k].weight(i));
          }
      }
    }
  });
}

at::Tensor empty_grad(const at::Tensor& like) { return at::empty({0}, like.options()); }

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
    scalar_t* out = loss.data_ptr<scalar_t>();
    for (int64_t b = 0; b < B; ++b) {
      double sum = 0;
      for (int64_t h = 0; h < H; ++h) sum += row_loss[b * H + h];
      out[b] = static_cast<scalar_t>(sum / static_cast<double>(C * H * W));
    }
  });
  return loss;
}

// Shared by both backward ops: allocates the requested gradients and runs the kernel.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> backward_cpu(
    const at::Tensor* grad_blend, const at::Tensor* grad_loss, const at::Tensor& sources_in,
    const at::Tensor& flows, const c10::optional<at::Tensor>& logits, const at::Tensor* target,
    bool residual, Padding pad, bool align_corners, std::array<bool, 4> mask) {
  const bool need_logits = mask[2] && logits.has_value();
  // The scatter writes gradient planes at the offsets computed from the source strides.
  const at::Tensor sources = mask[0] ? sources_in.contiguous() : sources_in;
  at::Tensor gs = mask[0] ? at::zeros(sources.sizes(), sources.options()) : empty_grad(sources);
  at::Tensor gf = mask[1] ? at::empty(flows.sizes(), flows.options()) : empty_grad(flows);
  at::Tensor gl = need_logits ? at::empty(logits->sizes(), logits->options()) : empty_grad(sources);
  at::Tensor gt = (mask[3] && target) ? at::empty(target->sizes(), target->options()) : empty_grad(sources);
  if (flows.size(0) == 0 || flows.size(3) * flows.size(4) == 0 || sources.size(2) == 0)
    return {gs, gf.zero_(), gl.zero_(), gt.zero_()};
  const at::Tensor f = flows.contiguous();
  const c10::optional<at::Tensor> l = logits ? c10::optional<at::Tensor>(logits->contiguous()) : c10::nullopt;
  const at::Tensor gb = grad_blend ? grad_blend->contiguous() : at::Tensor();
  const at::Tensor glo = grad_loss ? grad_loss->contiguous() : at::Tensor();
  const at::Tensor t = target ? target->contiguous() : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, sources.scalar_type(), "warp_blend_backward_cpu", [&] {
    Problem<scalar_t> p(sources, f, l ? &*l : nullptr, pad, residual, align_corners);
    Grads<scalar_t> g;
    if (mask[0]) g.sources = gs.data_ptr<scalar_t>();
    if (mask[1]) g.flows = gf.data_ptr<scalar_t>();
    if (need_logits) g.logits = gl.data_ptr<scalar_t>();
    if (mask[3] && target) g.target = gt.data_ptr<scalar_t>();
    backward_kernel<scalar_t>(p, grad_blend ? gb.data_ptr<scalar_t>() : nullptr,
                              grad_loss ? glo.data_ptr<scalar_t>() : nullptr,
                              target ? t.data_ptr<scalar_t>() : nullptr, g);
  });
  return {gs, gf, gl, gt};
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
}

}  // namespace fabnet
