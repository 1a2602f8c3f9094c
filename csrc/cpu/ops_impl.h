// The CPU ops of fabnet::warp_blend, warp_blend_l1 and their backward ops, as functions of
// tensors: included once per instruction-set variant (isa_base.cpp, isa_v3.cpp, isa_v4.cpp), each
// of which exports them as a CpuOps table (dispatch.h); warp_blend.cpp registers the dispatcher.
//
// One pass over the output pixels: per pixel, the softmax over K logits, the K bilinear tap sets
// (weights computed once and reused for all C channels), the blend and, for the loss, |target -
// blend| summed into a per-row partial. Rows are spread over threads with at::parallel_for; the
// per-sample loss is the sum of its rows' partials in a fixed order, so results do not depend on
// the thread count. The backward recomputes the blend instead of reading a stored one, and skips
// samples whose upstream gradient is zero (the curriculum back-propagates half of each batch).
//
// The kernels live in problem.h (tap set-up), forward.h and backward.h; this file adapts tensors
// to them. The includer defines FABNET_ISA (isa.h) and FABNET_CPU_OPS_TABLE, the name of the
// function returning this variant's table.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

#include <string>
#include <tuple>
#include <vector>

#include "backward.h"
#include "dispatch.h"
#include "forward.h"

namespace fabnet {
inline namespace FABNET_ISA {  // in the variant's namespace, so each function's symbol names it
namespace {

using namespace cpu;

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
// writes the row partials of the loss. Sources and target get no gradient here. One pass instead
// of two over every source pixel: the largest gain of the training step (docs/perf/cpu-kernel.md).
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
}  // namespace FABNET_ISA

const CpuOps* FABNET_CPU_OPS_TABLE() {
  static const CpuOps ops{&warp_blend_cpu, &warp_blend_backward_cpu, &warp_blend_l1_cpu,
                          &warp_blend_l1_backward_cpu, &warp_blend_l1_with_grads_cpu};
  return &ops;
}

}  // namespace fabnet
