// Op schemas of fabnet, defined once. Kernels register per device in cpu/ and cuda/.
//
// padding_mode is "zeros" or "border". Backward ops take an output mask and return an empty
// (0-element) tensor for every gradient that was not asked for, so sources that need no gradient
// take the gather-only path.
#include <Python.h>
#include <torch/library.h>

#include "cpu/dispatch.h"

namespace {

// fabnet._C.cpu_isa() -> the CPU kernels' instruction-set variant in use ("x86-64-v4", ...).
PyObject* py_cpu_isa(PyObject*, PyObject*) { return PyUnicode_FromString(fabnet::cpu_isa()); }

// fabnet._C.cpu_isas() -> the variants this CPU can run, best first ("x86-64-v4,x86-64-v3,...").
PyObject* py_cpu_isas(PyObject*, PyObject*) { return PyUnicode_FromString(fabnet::cpu_isas_supported()); }

// fabnet._C.set_cpu_isa(name) -> bool: use that variant ("auto": the best); False if it cannot run.
PyObject* py_set_cpu_isa(PyObject*, PyObject* arg) {
  const char* name = PyUnicode_AsUTF8(arg);
  if (name == nullptr) return nullptr;
  return PyBool_FromLong(fabnet::set_cpu_isa(name));
}

PyMethodDef kMethods[] = {
    {"cpu_isa", py_cpu_isa, METH_NOARGS, "The CPU kernels' instruction-set variant in use."},
    {"cpu_isas", py_cpu_isas, METH_NOARGS, "The variants this CPU can run, best first, comma-separated."},
    {"set_cpu_isa", py_set_cpu_isa, METH_O, "Use one variant (or 'auto'); False if this CPU cannot run it."},
    {nullptr, nullptr, 0, nullptr},
};

}  // namespace

extern "C" {
// `import fabnet._C` loads this library, whose static initialisers register the ops below.
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, kMethods};
  return PyModule_Create(&module_def);
}
}

TORCH_LIBRARY(fabnet, m) {
  m.def(
      "warp_blend(Tensor sources, Tensor flows, Tensor? logits, bool residual, str padding_mode, "
      "bool align_corners) -> Tensor");
  m.def(
      "warp_blend_backward(Tensor grad, Tensor sources, Tensor flows, Tensor? logits, bool residual, "
      "str padding_mode, bool align_corners, bool[3] output_mask) -> (Tensor, Tensor, Tensor)");
  m.def(
      "warp_blend_l1(Tensor sources, Tensor flows, Tensor? logits, Tensor target, bool residual, "
      "str padding_mode, bool align_corners) -> Tensor");
  m.def(
      "warp_blend_l1_backward(Tensor grad, Tensor sources, Tensor flows, Tensor? logits, Tensor target, "
      "bool residual, str padding_mode, bool align_corners, bool[4] output_mask) "
      "-> (Tensor, Tensor, Tensor, Tensor)");
  // The training forward (CPU): the loss and, from the same pass, d loss[b] / d flows[b] and
  // d loss[b] / d logits[b] (empty where output_mask is false); used when only flows and logits
  // need gradients, so that forward + backward gather every source pixel once. Its autograd
  // backward scales those two outputs in place: call it through fabnet.ops.warp_blend_l1, which
  // keeps them to itself.
  m.def(
      "warp_blend_l1_with_grads(Tensor sources, Tensor flows, Tensor? logits, Tensor target, "
      "bool residual, str padding_mode, bool align_corners, bool[2] output_mask) "
      "-> (Tensor, Tensor, Tensor)");
}
