// Argument checks shared by the CPU and CUDA entry points: every failure names the argument and what was
// expected, so a bad call from Python reads as a sentence rather than a crash.
#pragma once

#include <ATen/ATen.h>

#define LIAR_CHECK_ACCUMULATOR(t, name)                                                                 \
  TORCH_CHECK((t).scalar_type() == at::kFloat && (t).is_contiguous(),                                   \
              name " must be a contiguous float32 accumulator; got ", (t).scalar_type(),                 \
              (t).is_contiguous() ? "" : " (non-contiguous)")

#define LIAR_CHECK_SHAPE(t, name, ...)                                                                  \
  TORCH_CHECK((t).sizes() == at::IntArrayRef({__VA_ARGS__}), name " must have shape ",                  \
              at::IntArrayRef({__VA_ARGS__}), "; got ", (t).sizes())

#define LIAR_CHECK_ACTIVATIONS(t, name)                                                                 \
  TORCH_CHECK((t).dim() == 2 && (t).is_floating_point(), name " must be a 2-D floating [tokens, D] tensor; " \
              "got ", (t).dim(), "-D ", (t).scalar_type())

#define LIAR_CHECK_SAME_DEVICE(a, b)                                                                    \
  TORCH_CHECK((a).device() == (b).device(), #a " and " #b " must be on one device; got ", (a).device(), \
              " and ", (b).device())

namespace liar {

// The mask, when given, is bool [tokens] on the activations' device.
inline void check_mask(const std::optional<at::Tensor>& mask, const at::Tensor& x) {
  if (!mask.has_value()) return;
  TORCH_CHECK(mask->scalar_type() == at::kBool, "mask must be bool; got ", mask->scalar_type());
  LIAR_CHECK_SHAPE(*mask, "mask", x.size(0));
  LIAR_CHECK_SAME_DEVICE(*mask, x);
}

// G [D, D] and s [D] fp32 accumulators for activations x [tokens, D] on the same device.
inline void check_gram(const at::Tensor& G, const at::Tensor& s, const at::Tensor& x) {
  LIAR_CHECK_ACTIVATIONS(x, "x");
  LIAR_CHECK_ACCUMULATOR(G, "G");
  LIAR_CHECK_ACCUMULATOR(s, "s");
  LIAR_CHECK_SHAPE(G, "G", x.size(1), x.size(1));
  LIAR_CHECK_SHAPE(s, "s", x.size(1));
  LIAR_CHECK_SAME_DEVICE(G, x);
  LIAR_CHECK_SAME_DEVICE(s, x);
}

// The cross-Gram: student x_s [T, D_s] and teacher x_t [T, D_t] (same dtype, same tokens), G_ss [D_s, D_s],
// G_ts [D_t, D_s], s_s [D_s], s_t [D_t] fp32, all on one device.
inline void check_cross(const at::Tensor& G_ss, const at::Tensor& G_ts, const at::Tensor& s_s, const at::Tensor& s_t,
                        const at::Tensor& x_s, const at::Tensor& x_t, const std::optional<at::Tensor>& mask) {
  check_gram(G_ss, s_s, x_s);
  LIAR_CHECK_ACTIVATIONS(x_t, "x_t");
  TORCH_CHECK(x_t.size(0) == x_s.size(0), "x_t and x_s must hold the same tokens; got ", x_t.size(0), " and ",
              x_s.size(0), " rows");
  TORCH_CHECK(x_t.scalar_type() == x_s.scalar_type(), "x_t and x_s must have one dtype; got ", x_t.scalar_type(),
              " and ", x_s.scalar_type());
  LIAR_CHECK_ACCUMULATOR(G_ts, "G_ts");
  LIAR_CHECK_ACCUMULATOR(s_t, "s_t");
  LIAR_CHECK_SHAPE(G_ts, "G_ts", x_t.size(1), x_s.size(1));
  LIAR_CHECK_SHAPE(s_t, "s_t", x_t.size(1));
  LIAR_CHECK_SAME_DEVICE(G_ts, x_s);
  LIAR_CHECK_SAME_DEVICE(s_t, x_s);
  LIAR_CHECK_SAME_DEVICE(x_t, x_s);
  check_mask(mask, x_s);
}

}  // namespace liar
