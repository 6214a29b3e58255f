// liar._C: the compiled kernels, bound with pybind11. The torch.library ops (liar/ops/library.py) own the
// schemas; liar/ops/backends.py registers these functions as their device kernels.
#include <torch/extension.h>

#include "gram.h"

#ifndef LIAR_TORCH_VERSION
#define LIAR_TORCH_VERSION "unknown"
#endif

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  namespace py = pybind11;
  m.doc() = "liar compiled kernels: Gram accumulation on CPU (and CUDA when built with it)";
  // The torch version this module was compiled against: liar/_ext.py refuses a mismatched runtime.
  m.attr("TORCH_VERSION") = LIAR_TORCH_VERSION;
#ifdef LIAR_WITH_CUDA
  m.attr("WITH_CUDA") = true;
  m.def("gram_update_cuda", &liar::cuda::gram_update, "G[upper] += xᵀx, s += Σx on CUDA; returns rows",
        py::arg("G"), py::arg("s"), py::arg("x"), py::arg("mask") = py::none(),
        py::call_guard<py::gil_scoped_release>());
  m.def("gram_update_cross_cuda", &liar::cuda::gram_update_cross,
        "student Gram + teacher-student cross-Gram + sums on CUDA; returns rows", py::arg("G_ss"), py::arg("G_ts"),
        py::arg("s_s"), py::arg("s_t"), py::arg("x_s"), py::arg("x_t"), py::arg("mask") = py::none(),
        py::call_guard<py::gil_scoped_release>());
#else
  m.attr("WITH_CUDA") = false;
#endif
  m.def("gram_update_cpu", &liar::cpu::gram_update, "G[upper] += xᵀx, s += Σx on CPU; returns rows",
        py::arg("G"), py::arg("s"), py::arg("x"), py::arg("mask") = py::none(),
        py::call_guard<py::gil_scoped_release>());
  m.def("gram_update_cross_cpu", &liar::cpu::gram_update_cross,
        "student Gram + teacher-student cross-Gram + sums on CPU; returns rows", py::arg("G_ss"), py::arg("G_ts"),
        py::arg("s_s"), py::arg("s_t"), py::arg("x_s"), py::arg("x_t"), py::arg("mask") = py::none(),
        py::call_guard<py::gil_scoped_release>());
  m.def("cpu_isa", &liar::cpu::isa, "the CPU micro-kernel's instruction set: amx (bf16 on AMX tiles, the rest avx512), avx512, avx2 or generic");
  m.def("set_cpu_isa", &liar::cpu::set_isa, "use another supported CPU micro-kernel (tests)", py::arg("name"));
}
