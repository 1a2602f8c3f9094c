// Argument checks shared by the kernels. The Python wrapper checks first with friendlier errors;
// these guard direct callers of torch.ops.fabnet.* from reading out of bounds.
#pragma once

#include <ATen/ATen.h>

#include <string>

#include "warp_blend_math.h"

namespace fabnet {
inline namespace FABNET_ISA {

// A gradient that was not asked for: a 0-element tensor (the backward ops' placeholder).
inline at::Tensor empty_grad(const at::Tensor& like) { return at::empty({0}, like.options()); }

inline Padding parse_padding(const std::string& padding_mode) {
  TORCH_CHECK(padding_mode == "zeros" || padding_mode == "border",
              "padding_mode must be \"zeros\" or \"border\", got \"", padding_mode, "\"");
  return padding_mode == "zeros" ? Padding::kZeros : Padding::kBorder;
}

inline void check_warp_blend_args(const at::Tensor& sources, const at::Tensor& flows,
                                  const c10::optional<at::Tensor>& logits,
                                  const at::Tensor* target) {
  TORCH_CHECK(sources.dim() == 5, "sources must have shape (B, K, C, Hs, Ws); got ", sources.sizes());
  const auto B = sources.size(0), K = sources.size(1), C = sources.size(2);
  TORCH_CHECK(K >= 1, "sources must hold K >= 1 source frames; got ", sources.sizes());
  TORCH_CHECK(flows.dim() == 5 && flows.size(0) == B && flows.size(1) == K && flows.size(2) == 2,
              "flows must have shape (B, K, 2, H, W) with B=", B, ", K=", K, "; got ", flows.sizes());
  const auto H = flows.size(3), W = flows.size(4);
  TORCH_CHECK(flows.scalar_type() == sources.scalar_type(), "flows must have the dtype of sources (",
              sources.scalar_type(), "); got ", flows.scalar_type());
  TORCH_CHECK(flows.device() == sources.device(), "flows must be on ", sources.device(), "; got ",
              flows.device());
  if (logits.has_value()) {
    const auto& l = *logits;
    TORCH_CHECK(l.dim() == 4 && l.size(0) == B && l.size(1) == K && l.size(2) == H && l.size(3) == W,
                "logits must have shape (B, K, H, W) = (", B, ", ", K, ", ", H, ", ", W, "); got ",
                l.sizes());
    TORCH_CHECK(l.scalar_type() == sources.scalar_type(), "logits must have the dtype of sources (",
                sources.scalar_type(), "); got ", l.scalar_type());
    TORCH_CHECK(l.device() == sources.device(), "logits must be on ", sources.device(), "; got ",
                l.device());
  }
  if (target != nullptr) {
    const auto& t = *target;
    TORCH_CHECK(t.dim() == 4 && t.size(0) == B && t.size(1) == C && t.size(2) == H && t.size(3) == W,
                "target must have shape (B, C, H, W) = (", B, ", ", C, ", ", H, ", ", W, "); got ",
                t.sizes());
    TORCH_CHECK(t.scalar_type() == sources.scalar_type(), "target must have the dtype of sources (",
                sources.scalar_type(), "); got ", t.scalar_type());
    TORCH_CHECK(t.device() == sources.device(), "target must be on ", sources.device(), "; got ",
                t.device());
  }
}

// One axis of F.affine_grid's identity grid, (n,) in the accumulation type of `like`'s dtype,
// on its device: the very ops of ATen's linspace_from_neg_one (AffineGridGenerator.cpp), so the
// values are affine_grid's bit for bit (for half types, affine_grid's in float32: coordinates
// are computed in float32, as grid_sample computes them on inputs cast to float32). A formula
// such as start + step * i is not: at zero offsets it put a sample a rounding error off the pixel
// centre, on the other side of it, and took the derivative from the other cell (128 of 512
// flow-gradient values off, by up to 10.6, at (1, 1, 1, 16, 16) float32 with align_corners).
// Without `residual` the grid adds nothing: zeros.
inline at::Tensor identity_axis(int64_t n, bool align_corners, bool residual, const at::Tensor& like) {
  const auto acc = like.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  if (!residual || n <= 1) return at::zeros({n}, like.options().dtype(acc));
  auto range = at::linspace(-1, 1, n, like.options().dtype(acc));
  if (!align_corners) range = range * (n - 1) / n;
  return range.contiguous();
}

}  // namespace FABNET_ISA
}  // namespace fabnet
