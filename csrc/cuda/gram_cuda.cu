// CUDA entry points of the Gram ops: checks, the grid (student tile pairs, then cross tiles; token splits), one
// launch on the current stream of the tensors' device. 16-bit activations run the tensor-core tile kernel;
// fp32/fp64 activations keep full fp32 products through cuBLAS (the tensor cores would round them to tf32).
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include <optional>
#include <vector>

#include "../checks.h"
#include "../gram.h"
#include "gram_kernel.cuh"

namespace liar::cuda {
namespace {

// Token splits: enough thread blocks for two per multiprocessor, each split still streaming ≥ 8 K-steps.
constexpr int64_t kBlocksPerSM = 2;
constexpr int64_t kMinStepsPerSplit = 8;

bool vec_ok(const at::Tensor& x) {
  return x.size(1) % kVec == 0 && x.stride(0) % kVec == 0 && reinterpret_cast<uintptr_t>(x.data_ptr()) % 16 == 0;
}

template <typename T>
void launch_typed(const GramArgs& g, dim3 grid, bool vec, cudaStream_t stream) {
  if (vec) {
    gram_tiles_kernel<T, true><<<grid, kThreads, 0, stream>>>(g);
  } else {
    gram_tiles_kernel<T, false><<<grid, kThreads, 0, stream>>>(g);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// A zeroed [splits, ...] partial buffer when there are several splits, else the accumulator itself (or none).
std::optional<at::Tensor> partials(const std::optional<at::Tensor>& total, int64_t splits) {
  if (!total.has_value() || splits == 1) return total;
  std::vector<int64_t> shape{splits};
  shape.insert(shape.end(), total->sizes().begin(), total->sizes().end());
  return at::zeros(shape, total->options());
}

float* data_or_null(const std::optional<at::Tensor>& t) { return t.has_value() ? t->data_ptr<float>() : nullptr; }

int64_t split_distance(const std::optional<at::Tensor>& total, int64_t splits) {
  return splits > 1 && total.has_value() ? total->numel() : 0;
}

// One launch: G_ss[upper tiles] += x_sᵀx_s, s_s += Σ x_s and, with a teacher, G_ts += x_tᵀx_s, s_t += Σ x_t over
// the kept rows. Several token splits write their own partials, summed in split order: the same bytes every run.
void launch(const at::Tensor& xs, const std::optional<at::Tensor>& xt, const std::optional<at::Tensor>& mask,
            at::Tensor& G_ss, at::Tensor& s_s, const std::optional<at::Tensor>& G_ts,
            const std::optional<at::Tensor>& s_t) {
  const int64_t T = xs.size(0), DS = xs.size(1), DT = xt.has_value() ? xt->size(1) : 0;
  if (T == 0 || DS == 0) return;
  const int64_t nb = (DS + kBlock - 1) / kBlock;
  const int64_t n_sym = nb * (nb + 1) / 2;
  const int64_t tiles = n_sym + (DT + kBlock - 1) / kBlock * nb;
  const int64_t sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  const int64_t most = std::max<int64_t>(1, T / (kBK * kMinStepsPerSplit));
  const int64_t want = std::min<int64_t>(most, std::max<int64_t>(1, (kBlocksPerSM * sms + tiles - 1) / tiles));
  const int64_t per_split = ((T + want - 1) / want + kBK - 1) / kBK * kBK;
  const int64_t splits = (T + per_split - 1) / per_split;  // no empty split
  TORCH_CHECK(tiles < (int64_t{1} << 31) && splits <= 65535, "layer too large for one launch");
  const std::optional<at::Tensor> p_gss = partials(G_ss, splits), p_ss = partials(s_s, splits);
  const std::optional<at::Tensor> p_gts = partials(G_ts, splits), p_st = partials(s_t, splits);
  GramArgs g{xs.data_ptr(), xt.has_value() ? xt->data_ptr() : nullptr,
             mask.has_value() ? mask->data_ptr<bool>() : nullptr, data_or_null(p_gss), data_or_null(p_gts),
             data_or_null(p_ss), data_or_null(p_st), T, DS, DT, xs.stride(0), xt.has_value() ? xt->stride(0) : 0,
             n_sym, per_split, split_distance(G_ss, splits), split_distance(G_ts, splits),
             split_distance(s_s, splits), split_distance(s_t, splits)};
  const dim3 grid(static_cast<unsigned>(tiles), static_cast<unsigned>(splits));
  const bool vec = vec_ok(xs) && (!xt.has_value() || vec_ok(*xt));
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  if (xs.scalar_type() == at::kBFloat16) {
    launch_typed<__nv_bfloat16>(g, grid, vec, stream);
  } else {
    launch_typed<__half>(g, grid, vec, stream);
  }
  if (splits > 1) {
    G_ss.add_(p_gss->sum(0));
    s_s.add_(p_ss->sum(0));
    if (G_ts.has_value()) G_ts->add_(p_gts->sum(0));
    if (s_t.has_value()) s_t->add_(p_st->sum(0));
  }
}

bool tensor_core_dtype(const at::Tensor& x) {
  return x.scalar_type() == at::kBFloat16 || x.scalar_type() == at::kHalf;
}

at::Tensor kept(const at::Tensor& x, const std::optional<at::Tensor>& mask) {
  return (mask.has_value() ? x.index({*mask}) : x).to(at::kFloat);
}

int64_t rows(const at::Tensor& x, const std::optional<at::Tensor>& mask) {
  return mask.has_value() ? mask->sum().item<int64_t>() : x.size(0);
}

at::Tensor rows_contiguous(const at::Tensor& x) { return x.stride(1) == 1 ? x : x.contiguous(); }

std::optional<at::Tensor> contiguous_mask(const std::optional<at::Tensor>& mask) {
  return mask.has_value() ? std::optional<at::Tensor>(mask->contiguous()) : std::nullopt;
}

void check_cuda(const at::Tensor& x, const char* name) {
  TORCH_CHECK(x.is_cuda(), name, " must be a CUDA tensor for the cuda backend; got ", x.device());
}

}  // namespace

int64_t gram_update(at::Tensor G, at::Tensor s, const at::Tensor& x_in, const std::optional<at::Tensor>& mask_in) {
  check_gram(G, s, x_in);
  check_mask(mask_in, x_in);
  check_cuda(x_in, "x");
  const c10::cuda::CUDAGuard guard(x_in.device());
  if (!tensor_core_dtype(x_in)) {
    const at::Tensor xf = kept(x_in, mask_in);
    G.addmm_(xf.t(), xf);
    s.add_(xf.sum(0));
    return xf.size(0);
  }
  const at::Tensor x = rows_contiguous(x_in);
  const std::optional<at::Tensor> mask = contiguous_mask(mask_in);
  launch(x, std::nullopt, mask, G, s, std::nullopt, std::nullopt);
  return rows(x, mask);
}

int64_t gram_update_cross(at::Tensor G_ss, at::Tensor G_ts, at::Tensor s_s, at::Tensor s_t, const at::Tensor& xs_in,
                          const at::Tensor& xt_in, const std::optional<at::Tensor>& mask_in) {
  check_cross(G_ss, G_ts, s_s, s_t, xs_in, xt_in, mask_in);
  check_cuda(xs_in, "x_s");
  const c10::cuda::CUDAGuard guard(xs_in.device());
  if (!tensor_core_dtype(xs_in) || xs_in.size(1) == 0) {
    const at::Tensor xs = kept(xs_in, mask_in), xt = kept(xt_in, mask_in);
    G_ss.addmm_(xs.t(), xs);
    G_ts.addmm_(xt.t(), xs);
    s_s.add_(xs.sum(0));
    s_t.add_(xt.sum(0));
    return xs.size(0);
  }
  const at::Tensor xs = rows_contiguous(xs_in), xt = rows_contiguous(xt_in);
  const std::optional<at::Tensor> mask = contiguous_mask(mask_in);
  launch(xs, xt, mask, G_ss, s_s, G_ts, s_t);
  return rows(xs, mask);
}

}  // namespace liar::cuda
