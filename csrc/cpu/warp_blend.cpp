// TORCH_LIBRARY_IMPL(fabnet, CPU, m): the CPU ops, each calling the instruction-set variant chosen
// for this CPU (dispatch.h): x86-64-v4 where the CPU has AVX-512, else x86-64-v3 where it has
// AVX2 and FMA, else the build's baseline. The choice is made once, on the first call, from the
// CPU's own feature flags (__builtin_cpu_supports); fabnet.ops.extension.set_cpu_isa overrides it
// (tests and benchmarks run every variant the CPU has).
#include <torch/library.h>

#include <atomic>
#include <cstring>
#include <string>

#include "dispatch.h"

#ifndef FABNET_CPU_BASELINE
#define FABNET_CPU_BASELINE "default"
#endif

namespace fabnet {
namespace {

struct Variant {
  const char* name;
  const CpuOps* (*table)();
  bool (*supported)();
};

bool always() { return true; }

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
bool has_v3() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("bmi2") &&
         __builtin_cpu_supports("f16c") && __builtin_cpu_supports("movbe");
}
bool has_v4() {
  __builtin_cpu_init();
  return has_v3() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
         __builtin_cpu_supports("avx512cd");
}
#else
bool has_v3() { return false; }
bool has_v4() { return false; }
#endif

// Best first.
const Variant kVariants[] = {
    {"x86-64-v4", &cpu_ops_v4, &has_v4},
    {"x86-64-v3", &cpu_ops_v3, &has_v3},
    {FABNET_CPU_BASELINE, &cpu_ops_base, &always},
};

bool runnable(const Variant& v) { return v.table() != nullptr && v.supported(); }

const Variant* best() {
  for (const Variant& v : kVariants)
    if (runnable(v)) return &v;
  return &kVariants[2];
}

std::atomic<const Variant*> chosen{nullptr};

const Variant& current() {
  const Variant* v = chosen.load(std::memory_order_acquire);
  if (v == nullptr) {
    v = best();
    chosen.store(v, std::memory_order_release);
  }
  return *v;
}

const CpuOps& ops() { return *current().table(); }

at::Tensor warp_blend(const at::Tensor& s, const at::Tensor& f, const c10::optional<at::Tensor>& l, bool r,
                      c10::string_view p, bool a) {
  return ops().warp_blend(s, f, l, r, p, a);
}
std::tuple<at::Tensor, at::Tensor, at::Tensor> warp_blend_backward(const at::Tensor& g, const at::Tensor& s,
                                                                   const at::Tensor& f,
                                                                   const c10::optional<at::Tensor>& l, bool r,
                                                                   c10::string_view p, bool a,
                                                                   std::array<bool, 3> m) {
  return ops().warp_blend_backward(g, s, f, l, r, p, a, m);
}
at::Tensor warp_blend_l1(const at::Tensor& s, const at::Tensor& f, const c10::optional<at::Tensor>& l,
                         const at::Tensor& t, bool r, c10::string_view p, bool a) {
  return ops().warp_blend_l1(s, f, l, t, r, p, a);
}
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> warp_blend_l1_backward(
    const at::Tensor& g, const at::Tensor& s, const at::Tensor& f, const c10::optional<at::Tensor>& l,
    const at::Tensor& t, bool r, c10::string_view p, bool a, std::array<bool, 4> m) {
  return ops().warp_blend_l1_backward(g, s, f, l, t, r, p, a, m);
}
std::tuple<at::Tensor, at::Tensor, at::Tensor> warp_blend_l1_with_grads(const at::Tensor& s, const at::Tensor& f,
                                                                        const c10::optional<at::Tensor>& l,
                                                                        const at::Tensor& t, bool r,
                                                                        c10::string_view p, bool a,
                                                                        std::array<bool, 2> m) {
  return ops().warp_blend_l1_with_grads(s, f, l, t, r, p, a, m);
}

}  // namespace

const char* cpu_isa() { return current().name; }

const char* cpu_isas_supported() {
  static const std::string names = [] {
    std::string out;
    for (const Variant& v : kVariants)
      if (runnable(v)) out += (out.empty() ? "" : ",") + std::string(v.name);
    return out;
  }();
  return names.c_str();
}

bool set_cpu_isa(const char* name) {
  if (std::strcmp(name, "auto") == 0) {
    chosen.store(best(), std::memory_order_release);
    return true;
  }
  for (const Variant& v : kVariants) {
    if (std::strcmp(v.name, name) == 0 && runnable(v)) {
      chosen.store(&v, std::memory_order_release);
      return true;
    }
  }
  return false;
}

}  // namespace fabnet

TORCH_LIBRARY_IMPL(fabnet, CPU, m) {
  m.impl("warp_blend", &fabnet::warp_blend);
  m.impl("warp_blend_backward", &fabnet::warp_blend_backward);
  m.impl("warp_blend_l1", &fabnet::warp_blend_l1);
  m.impl("warp_blend_l1_backward", &fabnet::warp_blend_l1_backward);
  m.impl("warp_blend_l1_with_grads", &fabnet::warp_blend_l1_with_grads);
}
