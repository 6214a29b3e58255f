// CPU Gram accumulation. The output is cut into tile jobs (a block of rows × a block of columns, only the
// blocks touching the upper triangle for a symmetric Gram); threads pull jobs from a shared counter, and
// each job streams every kept token through it in chunks: convert the chunk's A rows and B columns to fp32
// panels in a thread-local buffer (fusing the column sums), then run the register-blocked micro-kernel.
// One parallel region per call and no barrier per chunk: with 2 cores shared with other processes, a first
// version with two barriers per 64-token chunk ran a D = 1536, 16384-token update in 4.0 s against the torch
// reference's 0.87 s; pulling jobs keeps both threads busy. No full-size fp32 copy of x is ever made.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <atomic>
#include <memory>
#include <new>
#include <vector>

#include "../checks.h"
#include "../gram.h"
#include "tiles.h"

namespace liar::cpu {
namespace {

// Tokens per chunk: a 3-panel B strip (48 channels × 128 tokens × 4 B = 24 KB) stays in the 32 KB L1d
// while the rows stream past (64 and 256 measured the same within this shared machine's noise).
constexpr int64_t kChunk = 128;
// Job size: at most 384 columns × 768 rows (multiples of every ISA's micro-tile: 16/48 columns, 2/6/8 rows),
// halved until there are 4 jobs per thread. Each job re-reads its channels of x for every token, so bigger
// jobs read x fewer times: single-threaded at D = 4096, 2048 bf16 tokens, 96 × 192 jobs ran at 70 GF/s,
// 192 × 384 at 79 and 384 × 768 at 83 (MKL's full-square product: 48 useful GF/s).
constexpr int64_t kMaxJobCols = 384;
constexpr int64_t kMaxJobRows = 768;
constexpr int64_t kMinJobCols = 96;
constexpr int64_t kJobsPerThread = 4;
// bf16 on AMX: each job packs its rows and columns for every token, and packing costs as much as AMX's tile
// products, so fewer, larger jobs pay: the D = 1536 Gram's jobs run single-threaded (8192 tokens, thread CPU
// time) in 58–61 ms as 20 jobs of 384 × 192, 46–48 ms as 6 of 768 × 384, 40–41 ms as 2 of 1536 × 768.
constexpr int64_t kJobsPerThreadAmx = 2;

struct JobShape {
  int64_t cols, rows;
};

template <typename scalar_t>
struct Source {
  const scalar_t* x;
  int64_t ld;
  const int64_t* rows;  // kept token rows
};

// One output tile job: C[row0:row1, col0:col1] += A[:, rows]ᵀ B[:, cols]; sums_a / sums_b, when set, receive
// the column sums of the A rows / B columns (each channel's sum is owned by exactly one job).
struct GramJob {
  int a_src, b_src;  // index into the sources: 0 = x (or x_s), 1 = x_t
  int64_t row0, row1, col0, col1;
  float* c;
  int64_t ldc;
  float* sums_a;
  float* sums_b;
  bool upper;  // skip what lies below the diagonal
  int64_t cost() const {
    const int64_t cols = col1 - col0, below = upper ? std::max<int64_t>(0, row1 - col0) : 0;
    return (row1 - row0) * cols - below * below / 2;
  }
};

struct AlignedFree {
  void operator()(float* p) const { ::operator delete[](p, std::align_val_t(64)); }
};
using Buffer = std::unique_ptr<float[], AlignedFree>;

Buffer aligned_floats(int64_t n) {
  return Buffer(static_cast<float*>(::operator new[](n * sizeof(float), std::align_val_t(64))));
}

Buffer panel_buffer(int64_t channels) { return aligned_floats((channels + kPanel - 1) / kPanel * kPanel * kChunk); }

// Channels [c0, c1) of tokens rows[t0 .. t0 + k) as fp32 panels at dst (zero past c1); adds their sums.
template <typename scalar_t>
void pack(const Source<scalar_t>& src, int64_t t0, int64_t k, int64_t c0, int64_t c1, float* dst, float* sums) {
  for (int64_t p0 = c0; p0 < c1; p0 += kPanel) {
    const int64_t n = std::min(kPanel, c1 - p0);
    float* panel = dst + (p0 - c0) / kPanel * kPanel * kChunk;
    float partial[kPanel] = {};
    for (int64_t t = 0; t < k; ++t) {
      const scalar_t* in = src.x + src.rows[t0 + t] * src.ld + p0;
      float* out = panel + t * kPanel;
      if (n == kPanel) {
        for (int64_t c = 0; c < kPanel; ++c) out[c] = static_cast<float>(in[c]);
      } else {
        for (int64_t c = 0; c < kPanel; ++c) out[c] = c < n ? static_cast<float>(in[c]) : 0.0f;
      }
      for (int64_t c = 0; c < kPanel; ++c) partial[c] += out[c];
    }
    if (sums != nullptr)
      for (int64_t c = 0; c < n; ++c) sums[p0 - c0 + c] += partial[c];
  }
}

template <typename scalar_t>
void run_job(const GramJob& job, const Source<scalar_t>* sources, int64_t n, TileKernel kernel, float* a, float* b) {
  const Panels pa{a, kPanel * kChunk, job.row1 - job.row0};
  const Panels pb{b, kPanel * kChunk, job.col1 - job.col0};
  const TileJob tile{&pa, &pb, job.c + job.row0 * job.ldc + job.col0, job.ldc, 0, pa.width, 0, pb.width,
                     job.upper, job.col0 - job.row0};
  for (int64_t t0 = 0; t0 < n; t0 += kChunk) {
    const int64_t k = std::min(kChunk, n - t0);
    pack(sources[job.a_src], t0, k, job.row0, job.row1, a, job.sums_a);
    pack(sources[job.b_src], t0, k, job.col0, job.col1, b, job.sums_b);
    kernel(tile, k);
  }
}

// All threads pull jobs (largest first) from one counter until none is left.
template <typename scalar_t>
void run_jobs(const std::vector<GramJob>& jobs, JobShape shape, const Source<scalar_t>* sources, int64_t n) {
  const TileKernel kernel = select_kernel();
  std::atomic<size_t> next{0};
  at::parallel_for(0, at::get_num_threads(), 1, [&](int64_t, int64_t) {
    Buffer a = panel_buffer(shape.rows), b = panel_buffer(shape.cols);
    for (size_t j = next++; j < jobs.size(); j = next++) run_job(jobs[j], sources, n, kernel, a.get(), b.get());
  });
}

// Jobs covering C [rows × cols] (only blocks touching the upper triangle when `upper`). Sums: for a symmetric
// Gram, the job holding a column block's diagonal sums its columns; otherwise the first column block's jobs
// sum their rows.
void add_jobs(std::vector<GramJob>& jobs, JobShape shape, int a_src, int b_src, at::Tensor& C, bool upper,
              float* sums) {
  const int64_t rows = C.size(0), cols = C.size(1);
  for (int64_t col0 = 0; col0 < cols; col0 += shape.cols) {
    const int64_t col1 = std::min(cols, col0 + shape.cols);
    const int64_t row_end = upper ? std::min(rows, col1) : rows;
    for (int64_t row0 = 0; row0 < row_end; row0 += shape.rows) {
      const int64_t row1 = std::min(row_end, row0 + shape.rows);
      float* sa = sums != nullptr && !upper && col0 == 0 ? sums + row0 : nullptr;
      float* sb = sums != nullptr && upper && row1 == row_end ? sums + col0 : nullptr;
      jobs.push_back({a_src, b_src, row0, row1, col0, col1, C.data_ptr<float>(), cols, sa, sb, upper});
    }
  }
}

// The largest job shape that still gives every thread `per_thread` jobs over the outputs (C, upper).
JobShape job_shape(const std::vector<std::pair<at::Tensor*, bool>>& outputs, int64_t per_thread) {
  JobShape shape{kMaxJobCols, kMaxJobRows};
  for (; shape.cols > kMinJobCols; shape = {shape.cols / 2, shape.rows / 2}) {
    std::vector<GramJob> probe;
    for (const auto& [C, upper] : outputs) add_jobs(probe, shape, 0, 0, *C, upper, nullptr);
    if (static_cast<int64_t>(probe.size()) >= per_thread * at::get_num_threads()) break;
  }
  return shape;
}

#ifdef LIAR_HAS_AMX_KERNEL
// bf16 inputs on AMX-BF16: the same jobs and job order, each run by gram_amx.cpp with its own packing.
void run_jobs_amx(const std::vector<GramJob>& jobs, JobShape shape, const std::vector<at::Tensor>& xs,
                  const std::vector<int64_t>& rows) {
  const uint16_t* x[2] = {nullptr, nullptr};
  int64_t ld[2] = {0, 0};
  for (size_t i = 0; i < xs.size(); ++i) {
    x[i] = reinterpret_cast<const uint16_t*>(xs[i].data_ptr<at::BFloat16>());
    ld[i] = xs[i].stride(0);
  }
  std::atomic<size_t> next{0};
  at::parallel_for(0, at::get_num_threads(), 1, [&](int64_t, int64_t) {
    Buffer a = aligned_floats(amx_workspace_words(shape.rows)), b = aligned_floats(amx_workspace_words(shape.cols));
    for (size_t j = next++; j < jobs.size(); j = next++) {
      const GramJob& g = jobs[j];
      const AmxJob job{x[g.a_src], x[g.b_src], ld[g.a_src], ld[g.b_src], rows.data(),
                       static_cast<int64_t>(rows.size()), g.row0, g.row1, g.col0, g.col1, g.c, g.ldc,
                       g.sums_a, g.sums_b, g.upper};
      run_job_amx(job, reinterpret_cast<uint32_t*>(a.get()), reinterpret_cast<uint32_t*>(b.get()));
    }
  });
}
#endif

int64_t jobs_per_thread(const at::Tensor& x) {
#ifdef LIAR_HAS_AMX_KERNEL
  if (x.scalar_type() == at::kBFloat16 && amx_selected()) return kJobsPerThreadAmx;
#endif
  return kJobsPerThread;
}

int64_t accumulate(std::vector<GramJob> jobs, JobShape shape, const std::vector<at::Tensor>& xs,
                   const std::vector<int64_t>& rows) {
  std::stable_sort(jobs.begin(), jobs.end(), [](const GramJob& l, const GramJob& r) { return l.cost() > r.cost(); });
#ifdef LIAR_HAS_AMX_KERNEL
  if (xs[0].scalar_type() == at::kBFloat16 && amx_selected()) {
    run_jobs_amx(jobs, shape, xs, rows);
    return static_cast<int64_t>(rows.size());
  }
#endif
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, xs[0].scalar_type(), "liar_gram_cpu", [&] {
    std::vector<Source<scalar_t>> sources;
    for (const at::Tensor& x : xs) sources.push_back({x.data_ptr<scalar_t>(), x.stride(0), rows.data()});
    run_jobs<scalar_t>(jobs, shape, sources.data(), static_cast<int64_t>(rows.size()));
  });
  return static_cast<int64_t>(rows.size());
}

std::vector<int64_t> kept_rows(const std::optional<at::Tensor>& mask, int64_t tokens) {
  std::vector<int64_t> rows;
  rows.reserve(tokens);
  const at::Tensor m = mask.has_value() ? mask->contiguous() : at::Tensor();
  const bool* keep = mask.has_value() ? m.data_ptr<bool>() : nullptr;
  for (int64_t t = 0; t < tokens; ++t)
    if (keep == nullptr || keep[t]) rows.push_back(t);
  return rows;
}

void check_cpu(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu(), name, " must be a CPU tensor for the cpp backend; got ", t.device());
}

at::Tensor rows_contiguous(const at::Tensor& x) { return x.stride(1) == 1 ? x : x.contiguous(); }

}  // namespace

int64_t gram_update(at::Tensor G, at::Tensor s, const at::Tensor& x_in, const std::optional<at::Tensor>& mask) {
  check_gram(G, s, x_in);
  check_mask(mask, x_in);
  check_cpu(x_in, "x");
  const at::Tensor x = rows_contiguous(x_in);
  const std::vector<int64_t> rows = kept_rows(mask, x.size(0));
  const JobShape shape = job_shape({{&G, true}}, jobs_per_thread(x));
  std::vector<GramJob> jobs;
  add_jobs(jobs, shape, 0, 0, G, /*upper=*/true, s.data_ptr<float>());
  return accumulate(std::move(jobs), shape, {x}, rows);
}

int64_t gram_update_cross(at::Tensor G_ss, at::Tensor G_ts, at::Tensor s_s, at::Tensor s_t, const at::Tensor& xs_in,
                          const at::Tensor& xt_in, const std::optional<at::Tensor>& mask) {
  check_cross(G_ss, G_ts, s_s, s_t, xs_in, xt_in, mask);
  check_cpu(xs_in, "x_s");
  check_cpu(xt_in, "x_t");
  const at::Tensor xs = rows_contiguous(xs_in), xt = rows_contiguous(xt_in);
  const std::vector<int64_t> rows = kept_rows(mask, xs.size(0));
  const JobShape shape = job_shape({{&G_ss, true}, {&G_ts, false}}, jobs_per_thread(xs));
  std::vector<GramJob> jobs;
  add_jobs(jobs, shape, 0, 0, G_ss, /*upper=*/true, s_s.data_ptr<float>());
  add_jobs(jobs, shape, 1, 0, G_ts, /*upper=*/false, s_t.data_ptr<float>());
  const int64_t n = accumulate(std::move(jobs), shape, {xs, xt}, rows);
  if (xs.size(1) == 0 && n > 0) {  // no G_ts job exists to carry the teacher sums
    const at::Tensor idx = at::tensor(rows, at::kLong);
    s_t.add_(xt.index_select(0, idx).to(at::kFloat).sum(0));
  }
  return n;
}

}  // namespace liar::cpu
