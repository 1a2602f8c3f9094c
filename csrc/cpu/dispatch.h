// The CPU ops of one instruction-set variant, as a table, and the choice between the variants.
//
// isa_base.cpp, isa_v3.cpp and isa_v4.cpp each compile ops_impl.h for their target and return its
// table; warp_blend.cpp registers ops that call the table chosen for this CPU (cpu_ops()).
#pragma once

#include <ATen/ATen.h>

#include <array>
#include <tuple>

namespace fabnet {

struct CpuOps {
  at::Tensor (*warp_blend)(const at::Tensor&, const at::Tensor&, const c10::optional<at::Tensor>&, bool,
                           c10::string_view, bool);
  std::tuple<at::Tensor, at::Tensor, at::Tensor> (*warp_blend_backward)(
      const at::Tensor&, const at::Tensor&, const at::Tensor&, const c10::optional<at::Tensor>&, bool,
      c10::string_view, bool, std::array<bool, 3>);
  at::Tensor (*warp_blend_l1)(const at::Tensor&, const at::Tensor&, const c10::optional<at::Tensor>&,
                              const at::Tensor&, bool, c10::string_view, bool);
  std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> (*warp_blend_l1_backward)(
      const at::Tensor&, const at::Tensor&, const at::Tensor&, const c10::optional<at::Tensor>&,
      const at::Tensor&, bool, c10::string_view, bool, std::array<bool, 4>);
  std::tuple<at::Tensor, at::Tensor, at::Tensor> (*warp_blend_l1_with_grads)(
      const at::Tensor&, const at::Tensor&, const c10::optional<at::Tensor>&, const at::Tensor&, bool,
      c10::string_view, bool, std::array<bool, 2>);
};

// Each variant's table; nullptr where the variant was not compiled (off x86-64).
const CpuOps* cpu_ops_base();
const CpuOps* cpu_ops_v3();
const CpuOps* cpu_ops_v4();

// The variant in use: "x86-64-v4", "x86-64-v3" or the baseline's name (build_info's cpu_arch).
const char* cpu_isa();
// Every variant this CPU can run, best first, as a comma-separated list.
const char* cpu_isas_supported();
// Use `name` (one of cpu_isas_supported(), or "auto" for the best); false if this CPU cannot.
bool set_cpu_isa(const char* name);

}  // namespace fabnet
