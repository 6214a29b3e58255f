// The kernels liar._C exposes. Each mutates its fp32 accumulators in place and returns the number of
// token rows it accumulated (the rows `mask` keeps, or all of them).
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <string>

namespace liar {

namespace cpu {
// G[upper] += xᵀx, s += Σ x over the kept rows. G: [D, D] fp32, s: [D] fp32, x: [T, D] fp32/fp16/bf16/fp64.
int64_t gram_update(at::Tensor G, at::Tensor s, const at::Tensor& x, const std::optional<at::Tensor>& mask);
// G_ss[upper] += x_sᵀx_s, G_ts += x_tᵀx_s (full [D_t, D_s]), s_s += Σ x_s, s_t += Σ x_t over the kept rows.
int64_t gram_update_cross(at::Tensor G_ss, at::Tensor G_ts, at::Tensor s_s, at::Tensor s_t, const at::Tensor& x_s,
                          const at::Tensor& x_t, const std::optional<at::Tensor>& mask);
// The micro-kernel instruction set in use ("amx", "avx512", "avx2" or "generic"), and an override for tests.
std::string isa();
void set_isa(const std::string& name);
}  // namespace cpu

#ifdef LIAR_WITH_CUDA
namespace cuda {
int64_t gram_update(at::Tensor G, at::Tensor s, const at::Tensor& x, const std::optional<at::Tensor>& mask);
int64_t gram_update_cross(at::Tensor G_ss, at::Tensor G_ts, at::Tensor s_s, at::Tensor s_t, const at::Tensor& x_s,
                          const at::Tensor& x_t, const std::optional<at::Tensor>& mask);
}  // namespace cuda
#endif

}  // namespace liar
