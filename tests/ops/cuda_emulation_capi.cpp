// C entry points over the CUDA launchers for test_cuda_emulation.py (ctypes), built together with
// csrc/cuda/forward.cu and backward.cu by the host compiler with -DFABNET_CUDA_EMULATION.
//
// sizes: B, K, C, Hs, Ws, H, W; strides in elements; logits / target may be null; identity: the
// (W,) and (H,) axes of F.affine_grid's identity in the accumulation type (zeros without residual).
// flags: 1 residual, 2 border padding, 4 align_corners, 8 an H100's 132 SMs (the forward's
// small-grid rule), 16 64-bit offsets even where 32-bit ones fit.
#include <cstdint>

#include "cuda/warp_blend_kernels.h"

namespace {

fabnet::cuda::WarpBlendProblem problem(int dtype, const int64_t* sizes, const void* sources,
                                       const int64_t* ss, const void* flows, const int64_t* fs,
                                       const void* logits, const int64_t* ls, const void* target,
                                       const int64_t* ts, int flags, const void* const* identity) {
  fabnet::cuda::WarpBlendProblem p;
  p.dtype = static_cast<fabnet::cuda::DType>(dtype);
  p.B = sizes[0];
  p.K = sizes[1];
  p.C = sizes[2];
  p.Hs = sizes[3];
  p.Ws = sizes[4];
  p.H = sizes[5];
  p.W = sizes[6];
  p.sources = sources;
  p.flows = flows;
  p.logits = logits;
  p.target = target;
  for (int i = 0; i < 5; ++i) p.sources_stride[i] = ss[i];
  for (int i = 0; i < 5; ++i) p.flows_stride[i] = fs[i];
  for (int i = 0; i < 4; ++i) p.logits_stride[i] = logits ? ls[i] : 0;
  for (int i = 0; i < 4; ++i) p.target_stride[i] = target ? ts[i] : 0;
  p.residual = flags & 1;
  p.identity_x = identity[0];
  p.identity_y = identity[1];
  p.border = flags & 2;
  p.align_corners = flags & 4;
  p.num_sms = (flags & 8) ? 132 : 0;
  p.force_int64_index = flags & 16;
  return p;
}

}  // namespace

extern "C" {

void emu_forward(int dtype, const int64_t* sizes, const void* sources, const int64_t* ss,
                 const void* flows, const int64_t* fs, const void* logits, const int64_t* ls,
                 int flags, const void* const* identity, void* out) {
  const auto p = problem(dtype, sizes, sources, ss, flows, fs, logits, ls, nullptr, nullptr, flags, identity);
  fabnet::cuda::warp_blend_forward_cuda(p, out, nullptr);
}

int64_t emu_num_partials(int dtype, const int64_t* sizes, const void* sources, const int64_t* ss,
                         const void* flows, const int64_t* fs, const void* logits, const int64_t* ls,
                         const void* target, const int64_t* ts, int flags,
                         const void* const* identity) {
  return fabnet::cuda::warp_blend_l1_num_partials(
      problem(dtype, sizes, sources, ss, flows, fs, logits, ls, target, ts, flags, identity));
}

void emu_l1(int dtype, const int64_t* sizes, const void* sources, const int64_t* ss,
            const void* flows, const int64_t* fs, const void* logits, const int64_t* ls,
            const void* target, const int64_t* ts, int flags, const void* const* identity,
            void* partials, void* loss) {
  const auto p = problem(dtype, sizes, sources, ss, flows, fs, logits, ls, target, ts, flags, identity);
  fabnet::cuda::warp_blend_l1_partials_cuda(p, partials, nullptr);
  fabnet::cuda::warp_blend_l1_finalize_cuda(p, partials, loss, nullptr);
}

void emu_backward(int dtype, const int64_t* sizes, const void* sources, const int64_t* ss,
                  const void* flows, const int64_t* fs, const void* logits, const int64_t* ls,
                  const void* target, const int64_t* ts, int flags,
                  const void* const* identity, const void* grad,
                  const int64_t* gs, void* g_sources, void* g_flows, void* g_logits, void* g_target,
                  void* contributions, int32_t* taps) {
  const auto p = problem(dtype, sizes, sources, ss, flows, fs, logits, ls, target, ts, flags, identity);
  fabnet::cuda::WarpBlendGrads g;
  g.grad = grad;
  for (int i = 0; i < 4; ++i) g.grad_stride[i] = gs[i];
  g.sources = g_sources;
  g.flows = g_flows;
  g.logits = g_logits;
  g.target = g_target;
  g.source_contributions = contributions;
  g.source_taps = taps;
  fabnet::cuda::warp_blend_backward_cuda(p, g, nullptr);
}

}  // extern "C"
