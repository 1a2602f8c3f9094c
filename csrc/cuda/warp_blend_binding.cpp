// CUDA implementations of the fabnet ops: argument checks, device guard, current stream, launch
// checks, and TORCH_LIBRARY_IMPL(fabnet, CUDA, m). The kernels live in forward.cu and backward.cu,
// free of torch headers; this file only adapts tensors to their raw-pointer structs.
//
// Inputs are passed with their own strides (no copies of permuted inputs); outputs are
// contiguous. Gradients that were not asked for come back as 0-element tensors, and sources that
// need no gradient take the gather-only path (no accumulation buffer, no atomics).
#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <array>
#include <atomic>
#include <limits>
#include <string>
#include <tuple>

#include "../checks.h"
#include "warp_blend_kernels.h"

namespace fabnet {
namespace {

// Streaming multiprocessors of a device, asked once per device: make_problem runs on every op call.
int sm_count(c10::DeviceIndex device) {
  static std::array<std::atomic<int>, C10_COMPILE_TIME_MAX_GPUS> counts{};  // 0: not asked yet
  int n = counts.at(device).load(std::memory_order_relaxed);
  if (n == 0) {
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device));
    counts.at(device).store(n, std::memory_order_relaxed);
  }
  return n;
}

cuda::DType dtype_of(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat: return cuda::DType::kFloat32;
    case at::kDouble: return cuda::DType::kFloat64;
    case at::kHalf: return cuda::DType::kFloat16;
    case at::kBFloat16: return cuda::DType::kBFloat16;
    default:
      TORCH_CHECK(false, "sources must be float32, float64, float16 or bfloat16; got ", t.scalar_type());
  }
  return cuda::DType::kFloat32;  // unreachable: TORCH_CHECK(false) throws
}

void check_cuda(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.is_cuda(), name, " must be a CUDA tensor; got one on ", t.device());
}

// Checks shared by every op, then the raw view of the inputs. `identity` keeps F.affine_grid's
// identity axes (read by the kernels) alive until the caller's launches are enqueued.
cuda::WarpBlendProblem make_problem(const at::Tensor& sources, const at::Tensor& flows,
                                    const c10::optional<at::Tensor>& logits, const at::Tensor* target,
                                    bool residual, c10::string_view padding_mode, bool align_corners,
                                    std::array<at::Tensor, 2>& identity) {
  check_warp_blend_args(sources, flows, logits, target);
  check_cuda(sources, "sources");
  const Padding pad = parse_padding(std::string(padding_mode));
  cuda::WarpBlendProblem p;
  p.dtype = dtype_of(sources);
  p.B = sources.size(0);
  p.K = sources.size(1);
  p.C = sources.size(2);
  p.Hs = sources.size(3);
  p.Ws = sources.size(4);
  p.H = flows.size(3);
  p.W = flows.size(4);
  p.sources = sources.data_ptr();
  for (int i = 0; i < 5; ++i) p.sources_stride[i] = sources.stride(i);
  p.flows = flows.data_ptr();
  for (int i = 0; i < 5; ++i) p.flows_stride[i] = flows.stride(i);
  p.logits = logits.has_value() ? logits->data_ptr() : nullptr;
  for (int i = 0; i < 4; ++i) p.logits_stride[i] = logits.has_value() ? logits->stride(i) : 0;
  p.target = target != nullptr ? target->data_ptr() : nullptr;
  for (int i = 0; i < 4; ++i) p.target_stride[i] = target != nullptr ? target->stride(i) : 0;
  p.residual = residual;
  identity = {identity_axis(p.W, align_corners, residual, flows),
              identity_axis(p.H, align_corners, residual, flows)};
  p.identity_x = identity[0].data_ptr();
  p.identity_y = identity[1].data_ptr();
  p.border = pad == Padding::kBorder;
  p.align_corners = align_corners;
  p.num_sms = sm_count(sources.device().index());  // the forward sizes its grid by it
  return p;
}

at::Tensor warp_blend_cuda(const at::Tensor& sources, const at::Tensor& flows,
                           const c10::optional<at::Tensor>& logits, bool residual,
                           c10::string_view padding_mode, bool align_corners) {
  std::array<at::Tensor, 2> identity;
  const cuda::WarpBlendProblem p =
      make_problem(sources, flows, logits, nullptr, residual, padding_mode, align_corners, identity);
  const c10::cuda::CUDAGuard guard(sources.device());
  at::Tensor out = at::empty({p.B, p.C, p.H, p.W}, sources.options());
  if (out.numel() == 0) return out;
  cuda::warp_blend_forward_cuda(p, out.data_ptr(), c10::cuda::getCurrentCUDAStream());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

at::Tensor warp_blend_l1_cuda(const at::Tensor& sources, const at::Tensor& flows,
                              const c10::optional<at::Tensor>& logits, const at::Tensor& target,
                              bool residual, c10::string_view padding_mode, bool align_corners) {
  std::array<at::Tensor, 2> identity;
  const cuda::WarpBlendProblem p =
      make_problem(sources, flows, logits, &target, residual, padding_mode, align_corners, identity);
  const c10::cuda::CUDAGuard guard(sources.device());
  at::Tensor loss = at::empty({p.B}, sources.options());
  if (p.B == 0) return loss;
  if (p.C * p.H * p.W == 0) return loss.fill_(std::numeric_limits<double>::quiet_NaN());  // mean of nothing
  const auto acc = at::toOpMathType(sources.scalar_type());
  // One partial sum per block and sample: (B, H W / (256 x pack)) values, 0.2% of the inputs'
  // bytes at (32, 3, 3, 256, 256) fp32.
  at::Tensor partials = at::empty({p.B, cuda::warp_blend_l1_num_partials(p)}, sources.options().dtype(acc));
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  cuda::warp_blend_l1_partials_cuda(p, partials.data_ptr(), stream);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  cuda::warp_blend_l1_finalize_cuda(p, partials.data_ptr(), loss.data_ptr(), stream);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return loss;
}

// Shared by both backward ops: allocates the requested gradients and runs the kernel.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> backward_cuda(
    const at::Tensor& grad, const at::Tensor& sources, const at::Tensor& flows,
    const c10::optional<at::Tensor>& logits, const at::Tensor* target, bool residual,
    c10::string_view padding_mode, bool align_corners, std::array<bool, 4> mask) {
  std::array<at::Tensor, 2> identity;
  const cuda::WarpBlendProblem p =
      make_problem(sources, flows, logits, target, residual, padding_mode, align_corners, identity);
  check_cuda(grad, "grad");
  TORCH_CHECK(grad.device() == sources.device(), "grad must be on ", sources.device(), "; got ", grad.device());
  TORCH_CHECK(grad.scalar_type() == sources.scalar_type(), "grad must have the dtype of sources (",
              sources.scalar_type(), "); got ", grad.scalar_type());
  const c10::cuda::CUDAGuard guard(sources.device());
  const bool need_logits = mask[2] && logits.has_value();
  const bool need_target = mask[3] && target != nullptr;
  const bool empty = p.B * p.C * p.H * p.W == 0;
  // torch.use_deterministic_algorithms(True): source gradients without float atomics.
  const bool deterministic = mask[0] && !empty && at::globalContext().deterministicAlgorithms();
  // Half-precision source gradients accumulate in a float32 buffer, cast once.
  const auto acc = at::toOpMathType(sources.scalar_type());
  at::Tensor gs = mask[0] ? at::zeros(sources.sizes(), sources.options().dtype(acc)) : at::Tensor();
  // An empty problem launches nothing: its gradients are zeros.
  auto alloc = [&](at::IntArrayRef sizes) {
    return empty ? at::zeros(sizes, sources.options()) : at::empty(sizes, sources.options());
  };
  at::Tensor gf = mask[1] ? alloc(flows.sizes()) : empty_grad(flows);
  at::Tensor gl = need_logits ? alloc(logits->sizes()) : empty_grad(sources);
  at::Tensor gt = need_target ? alloc(target->sizes()) : empty_grad(sources);
  at::Tensor contributions, taps;
  if (deterministic) {
    TORCH_CHECK(p.Hs * p.Ws < (int64_t(1) << 31),
                "deterministic source gradients need a (Hs, Ws) plane of fewer than 2^31 elements; got ",
                p.Hs, " x ", p.Ws);
    contributions = at::zeros({p.B, p.K, p.C, p.H * p.W * 4}, sources.options().dtype(acc));
    taps = at::zeros({p.B, p.K, 1, p.H * p.W * 4}, sources.options().dtype(at::kInt));
  }
  if (!empty && (mask[0] || mask[1] || need_logits || need_target)) {
    cuda::WarpBlendGrads g;
    g.grad = grad.data_ptr();
    for (int i = 0; i < 4; ++i) g.grad_stride[i] = i < grad.dim() ? grad.stride(i) : 0;
    g.sources = mask[0] && !deterministic ? gs.data_ptr() : nullptr;
    g.source_contributions = deterministic ? contributions.data_ptr() : nullptr;
    g.source_taps = deterministic ? taps.data_ptr<int32_t>() : nullptr;
    g.flows = mask[1] ? gf.data_ptr() : nullptr;
    g.logits = need_logits ? gl.data_ptr() : nullptr;
    g.target = need_target ? gt.data_ptr() : nullptr;
    cuda::warp_blend_backward_cuda(p, g, c10::cuda::getCurrentCUDAStream());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  if (deterministic) {
    // Sum each source pixel's contributions in a fixed order: index_add_ sorts the destinations
    // and adds each run sequentially when deterministic algorithms are on (its atomic version
    // otherwise). Costs 12 bytes per (pixel, source, channel, tap): 0.9 GB at (32, 3, 3, 256,
    // 256) fp32, against 2 x 25 MB for the gradient buffer alone.
    const at::Tensor planes = at::arange(p.B * p.K * p.C, taps.options().dtype(at::kLong)).mul_(p.Hs * p.Ws);
    const at::Tensor index = taps.to(at::kLong) + planes.view({p.B, p.K, p.C, 1});
    gs.view(-1).index_add_(0, index.view(-1), contributions.view(-1));
  }
  if (mask[0]) gs = gs.to(sources.scalar_type());
  else gs = empty_grad(sources);
  return {gs, gf, gl, gt};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> warp_blend_backward_cuda(
    const at::Tensor& grad, const at::Tensor& sources, const at::Tensor& flows,
    const c10::optional<at::Tensor>& logits, bool residual, c10::string_view padding_mode,
    bool align_corners, std::array<bool, 3> mask) {
  TORCH_CHECK(grad.dim() == 4 && grad.size(0) == sources.size(0) && grad.size(1) == sources.size(2) &&
                  grad.size(2) == flows.size(3) && grad.size(3) == flows.size(4),
              "grad must have the blend's shape (B, C, H, W); got ", grad.sizes());
  auto [gs, gf, gl, gt] = backward_cuda(grad, sources, flows, logits, nullptr, residual, padding_mode,
                                        align_corners, {mask[0], mask[1], mask[2], false});
  return {gs, gf, gl};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> warp_blend_l1_backward_cuda(
    const at::Tensor& grad, const at::Tensor& sources, const at::Tensor& flows,
    const c10::optional<at::Tensor>& logits, const at::Tensor& target, bool residual,
    c10::string_view padding_mode, bool align_corners, std::array<bool, 4> mask) {
  TORCH_CHECK(grad.dim() == 1 && grad.size(0) == sources.size(0),
              "grad must have the loss's shape (B,) with B=", sources.size(0), "; got ", grad.sizes());
  return backward_cuda(grad, sources, flows, logits, &target, residual, padding_mode, align_corners, mask);
}

}  // namespace

TORCH_LIBRARY_IMPL(fabnet, CUDA, m) {
  m.impl("warp_blend", &warp_blend_cuda);
  m.impl("warp_blend_backward", &warp_blend_backward_cuda);
  m.impl("warp_blend_l1", &warp_blend_l1_cuda);
  m.impl("warp_blend_l1_backward", &warp_blend_l1_backward_cuda);
}

}  // namespace fabnet
