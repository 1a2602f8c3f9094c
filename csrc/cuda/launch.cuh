// Host side of the launchers, shared by forward.cu and backward.cu: dtype dispatch, the choice of
// index type, the typed kernel arguments, and the launch itself. No torch headers.
#pragma once

#include <cstdint>
#include <cstdlib>

#include "device_functions.cuh"

namespace fabnet {
namespace cuda {
namespace detail {

// Every launch goes through here (the CPU emulation substitutes its own).
#if defined(FABNET_CUDA_EMULATION)
using ::fabnet_emulation::launch;
#else
template <typename... Params, typename... Values>
void launch(void (*kernel)(Params...), dim3 grid, int threads, cudaStream_t stream, const Values&... args) {
  kernel<<<grid, threads, 0, stream>>>(args...);
}
#endif

template <typename Fn>
void dispatch(DType dtype, const Fn& fn) {
  switch (dtype) {
    case DType::kFloat32: fn(float{}); break;
    case DType::kFloat64: fn(double{}); break;
    case DType::kFloat16: fn(__half{}); break;
    case DType::kBFloat16: fn(__nv_bfloat16{}); break;
  }
}

// One past the largest offset a strided tensor of these sizes reaches (0 when it is empty).
inline int64_t span(const int64_t* sizes, const int64_t* strides, int n) {
  int64_t last = 0;
  for (int i = 0; i < n; ++i) {
    if (sizes[i] == 0) return 0;
    last += (sizes[i] - 1) * std::llabs(strides[i]);
  }
  return last + 1;
}

// Whether every offset the kernels form fits in int32: each input's span, each contiguous output
// (blend, flow and logit gradients, the source-gradient buffer and its deterministic
// contributions), and the gathers' reach of up to two rows and columns outside a source plane.
inline bool fits_int32(const WarpBlendProblem& p, int64_t extra_elements = 0) {
  constexpr int64_t limit = (int64_t(1) << 31) - 1;
  const int64_t src_sizes[5] = {p.B, p.K, p.C, p.Hs, p.Ws};
  const int64_t flow_sizes[5] = {p.B, p.K, 2, p.H, p.W};
  const int64_t map_sizes[4] = {p.B, p.K, p.H, p.W};
  const int64_t img_sizes[4] = {p.B, p.C, p.H, p.W};
  const int64_t reach = 2 * (std::llabs(p.sources_stride[3]) + std::llabs(p.sources_stride[4]));
  const int64_t spans[] = {
      span(src_sizes, p.sources_stride, 5) + reach,
      span(flow_sizes, p.flows_stride, 5),
      p.logits != nullptr ? span(map_sizes, p.logits_stride, 4) : 0,
      p.target != nullptr ? span(img_sizes, p.target_stride, 4) : 0,
      p.B * p.K * p.C * p.Hs * p.Ws,
      p.B * p.K * 2 * p.H * p.W,
      p.B * p.C * p.H * p.W,
      extra_elements,
  };
  for (const int64_t s : spans)
    if (s > limit) return false;
  return !p.force_int64_index;
}

template <typename T, typename I>
Args<T, I> make_args(const WarpBlendProblem& p) {
  using acc_t = typename AccOf<T>::type;
  Args<T, I> a;
  a.src = static_cast<const T*>(p.sources);
  a.flow = static_cast<const T*>(p.flows);
  a.logit = static_cast<const T*>(p.logits);
  a.tgt = static_cast<const T*>(p.target);
  for (int i = 0; i < 5; ++i) a.ss[i] = static_cast<I>(p.sources_stride[i]);
  for (int i = 0; i < 5; ++i) a.fs[i] = static_cast<I>(p.flows_stride[i]);
  for (int i = 0; i < 4; ++i) a.ls[i] = static_cast<I>(p.logits != nullptr ? p.logits_stride[i] : 0);
  for (int i = 0; i < 4; ++i) a.ts[i] = static_cast<I>(p.target != nullptr ? p.target_stride[i] : 0);
  a.K = static_cast<I>(p.K);
  a.C = static_cast<I>(p.C);
  a.Hs = static_cast<I>(p.Hs);
  a.Ws = static_cast<I>(p.Ws);
  a.H = static_cast<I>(p.H);
  a.W = static_cast<I>(p.W);
  a.by_w = FastDiv::make(p.W > 0 && p.W < (int64_t(1) << 31) ? static_cast<uint32_t>(p.W) : 1u);
  a.ax = Axis<acc_t>::make(p.Ws, p.W, p.align_corners);
  a.ay = Axis<acc_t>::make(p.Hs, p.H, p.align_corners);
  a.border = p.border;
  a.residual = p.residual;
  a.identity_x = static_cast<const acc_t*>(p.identity_x);
  a.identity_y = static_cast<const acc_t*>(p.identity_y);
  return a;
}

// Calls fn(int32_t{}) or fn(int64_t{}): the index type of the kernels to launch.
template <typename Fn>
void with_index_type(bool int32, const Fn& fn) {
  if (int32)
    fn(int32_t{});
  else
    fn(int64_t{});
}

}  // namespace detail
}  // namespace cuda
}  // namespace fabnet
