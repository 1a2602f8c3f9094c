// Launchers of the CUDA kernels of fabnet::warp_blend / warp_blend_l1 and their backward.
//
// Torch-free (raw pointers, strides in elements, cudaStream_t), so the kernels compile and are
// checked with nvcc alone; warp_blend_binding.cpp adapts tensors to these structs. Every
// launcher only enqueues work on `stream`; the caller checks for launch errors.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace fabnet {
namespace cuda {

// Storage type of every tensor of one call. Accumulation is float32 (float64 for kFloat64).
enum class DType : int { kFloat32 = 0, kFloat64 = 1, kFloat16 = 2, kBFloat16 = 3 };

// The inputs of one call. Strides are in elements, any layout (permuted inputs are read in place).
struct WarpBlendProblem {
  DType dtype;
  int64_t B, K, C, Hs, Ws, H, W;
  const void* sources;       // (B, K, C, Hs, Ws)
  int64_t sources_stride[5];
  const void* flows;         // (B, K, 2, H, W): x, y in grid_sample coordinates (or offsets)
  int64_t flows_stride[5];
  const void* logits;        // (B, K, H, W), or nullptr for equal weights 1/K
  int64_t logits_stride[4];
  const void* target;        // (B, C, H, W) for the loss, nullptr for the blend
  int64_t target_stride[4];
  bool residual;             // flows are offsets from F.affine_grid's identity
  const void* identity_x;    // (W,) that identity's x, in the accumulation type (zeros if !residual)
  const void* identity_y;    // (H,) its y
  bool border;               // padding_mode "border" (else "zeros")
  bool align_corners;
  // Streaming multiprocessors of the device (0: unknown). The forward packs 4 pixels per thread
  // only when that still gives every SM its resident blocks; see forward.cu.
  int num_sms = 0;
  // Use 64-bit offsets even where 32-bit ones fit (tests exercise the huge-tensor kernels).
  bool force_int64_index = false;
};

// Upstream gradient and the gradient outputs of one backward call; nullptr where not requested.
struct WarpBlendGrads {
  const void* grad;      // (B, C, H, W) upstream of the blend, or (B,) of the loss (stride grad_stride[0])
  int64_t grad_stride[4];
  void* sources;         // zeroed contiguous (B, K, C, Hs, Ws) buffer in the accumulation type
  // Deterministic source gradients instead of `sources` (which is then nullptr): every pixel
  // writes its four taps' contributions, (B, K, C, H W, 4) in the accumulation type, and their
  // offsets in the (Hs, Ws) plane, (B, K, H W, 4) int32; both zeroed by the caller, who sums the
  // contributions into the gradient in a fixed order (warp_blend_binding.cpp).
  void* source_contributions = nullptr;
  int32_t* source_taps = nullptr;
  void* flows;           // contiguous (B, K, 2, H, W), storage type
  void* logits;          // contiguous (B, K, H, W), storage type
  void* target;          // contiguous (B, C, H, W), storage type (loss only)
};

// Blend into `out`, contiguous (B, C, H, W) in the storage type.
void warp_blend_forward_cuda(const WarpBlendProblem& p, void* out, cudaStream_t stream);

// Number of partial sums per sample that warp_blend_l1_partials_cuda writes.
int64_t warp_blend_l1_num_partials(const WarpBlendProblem& p);

// Per-block sums of |target - blend| into `partials`, (B, num_partials) in the accumulation type.
void warp_blend_l1_partials_cuda(const WarpBlendProblem& p, void* partials, cudaStream_t stream);

// loss[b] = sum of partials[b, :] / (C H W), summed in a fixed order (deterministic), into
// `loss`, (B,) in the storage type.
void warp_blend_l1_finalize_cuda(const WarpBlendProblem& p, const void* partials, void* loss,
                                 cudaStream_t stream);

// Gradients of the blend (target == nullptr) or of the loss.
void warp_blend_backward_cuda(const WarpBlendProblem& p, const WarpBlendGrads& g, cudaStream_t stream);

}  // namespace cuda
}  // namespace fabnet
