// The CUDA Gram tile kernel: one launch accumulates the student Gram G_ss[upper tiles] += x_sᵀx_s and, with a
// teacher, the cross-Gram G_ts += x_tᵀx_s: blocks [0, n_sym) run the student's tile pairs (i ≤ j), the rest the
// cross tiles. 16-bit inputs (bf16/fp16) on the tensor cores (WMMA 16×16×16) with fp32 accumulators, tiles
// staged through shared memory by cp.async in two stages, column sums fused into the blocks that own them.
// Split-K for small layers: each token split writes its own zeroed partial buffer (the launcher sums them in
// split order), so results never depend on timing.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_pipeline.h>
#include <mma.h>

#include <cstdint>

namespace liar::cuda {

constexpr int kBlock = 128;          // output tile side (square: symmetric launches index tile pairs i ≤ j)
constexpr int kBK = 32;              // tokens per K-step
constexpr int kThreads = 256;        // 8 warps as 2 × 4, each owning 64 × 32 of the tile
constexpr int kLd = kBlock + 8;      // shared row pitch in elements: +16 B staggers the fragment loads' banks
constexpr int kStages = 2;           // cp.async double buffering
constexpr int kVec = 8;              // 16-bit elements per 16-byte cp.async

struct GramArgs {
  const void* xs;      // student [T, DS], row stride lds: the B operand of every tile
  const void* xt;      // teacher [T, DT], row stride ldt, or nullptr (no cross tiles)
  const bool* mask;    // [T] or nullptr
  float* gss;          // [DS, DS] (row stride DS), upper tile pairs
  float* gts;          // [DT, DS] (row stride DS)
  float* ss;           // [DS] student sums, owned by the diagonal tiles
  float* st;           // [DT] teacher sums, owned by the first cross tile column
  int64_t T, DS, DT, lds, ldt;
  int64_t n_sym;       // student tile pairs; the blocks after them are cross tiles
  int64_t per_split;   // tokens per blockIdx.y, a multiple of kBK
  int64_t split_gss, split_gts, split_ss, split_st;  // distance between two splits' partials (0 with one split)
};

template <typename T>
struct Stage {
  T a[kBK][kLd];  // a[t][i]: tokens × the tile's A channels (col-major A for the fragments)
  T b[kBK][kLd];  // b[t][j]: tokens × the tile's B channels (row-major B)
};

// torch builds with __CUDA_NO_HALF_CONVERSIONS__ / __CUDA_NO_BFLOAT16_CONVERSIONS__: convert explicitly.
__device__ inline float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ inline float to_float(__half v) { return __half2float(v); }
template <typename T>
__device__ inline T zero();
template <>
__device__ inline __nv_bfloat16 zero<__nv_bfloat16>() { return __float2bfloat16(0.0f); }
template <>
__device__ inline __half zero<__half>() { return __float2half(0.0f); }

// Tile pair (i, j), i ≤ j, of a linear index in column order: (0,0), (0,1), (1,1), (0,2), ...
__device__ inline void upper_tile(int64_t tile, int64_t& i, int64_t& j) {
  j = static_cast<int64_t>((sqrt(8.0 * static_cast<double>(tile) + 1.0) - 1.0) * 0.5);
  while ((j + 1) * (j + 2) / 2 <= tile) ++j;
  while (j * (j + 1) / 2 > tile) --j;
  i = tile - j * (j + 1) / 2;
}

__device__ inline bool keep_row(const GramArgs& g, int64_t t, int64_t t_end) {
  return t < t_end && (g.mask == nullptr || g.mask[t]);
}

// Stage tokens [t0, t0 + kBK) × channels [c0, c0 + kBlock) of x into dst; rows dropped by the mask, past the
// range, or channels past D are zero. kVecLoad: 16-byte cp.async (needs D, ld and the base 8-element aligned).
template <typename T, bool kVecLoad>
__device__ inline void stage_tile(const GramArgs& g, const T* x, int64_t ld, int64_t D, int64_t c0, int64_t t0,
                                  int64_t t_end, T (&dst)[kBK][kLd]) {
  if constexpr (kVecLoad) {
    for (int v = threadIdx.x; v < kBK * kBlock / kVec; v += kThreads) {
      const int r = v / (kBlock / kVec), col = (v % (kBlock / kVec)) * kVec;
      const bool ok = keep_row(g, t0 + r, t_end) && c0 + col < D;
      const T* src = ok ? x + (t0 + r) * ld + c0 + col : x;
      __pipeline_memcpy_async(&dst[r][col], src, 16, ok ? 0 : 16);
    }
  } else {
    for (int e = threadIdx.x; e < kBK * kBlock; e += kThreads) {
      const int r = e / kBlock, col = e % kBlock;
      const bool ok = keep_row(g, t0 + r, t_end) && c0 + col < D;
      dst[r][col] = ok ? x[(t0 + r) * ld + c0 + col] : zero<T>();
    }
  }
}

template <typename T>
using FragA = nvcuda::wmma::fragment<nvcuda::wmma::matrix_a, 16, 16, 16, T, nvcuda::wmma::col_major>;
template <typename T>
using FragB = nvcuda::wmma::fragment<nvcuda::wmma::matrix_b, 16, 16, 16, T, nvcuda::wmma::row_major>;
using FragC = nvcuda::wmma::fragment<nvcuda::wmma::accumulator, 16, 16, 16, float>;

// One warp's 64 × 32 share of the tile over one staged K-step: 4 × 2 fragments.
template <typename T>
__device__ inline void mma_stage(const Stage<T>& st, int wr, int wc, FragC (&acc)[4][2]) {
#pragma unroll
  for (int kk = 0; kk < kBK; kk += 16) {
    FragA<T> fa[4];
    FragB<T> fb[2];
#pragma unroll
    for (int fi = 0; fi < 4; ++fi) nvcuda::wmma::load_matrix_sync(fa[fi], &st.a[kk][wr * 64 + fi * 16], kLd);
#pragma unroll
    for (int fj = 0; fj < 2; ++fj) nvcuda::wmma::load_matrix_sync(fb[fj], &st.b[kk][wc * 32 + fj * 16], kLd);
#pragma unroll
    for (int fi = 0; fi < 4; ++fi)
#pragma unroll
      for (int fj = 0; fj < 2; ++fj) nvcuda::wmma::mma_sync(acc[fi][fj], fa[fi], fb[fj], acc[fi][fj]);
  }
}

// Each split owns its partial buffer: no other block writes *p, so a plain add is race-free.
__device__ inline void add_out(float* p, float v) { *p += v; }

// Adds the warp's fragments into C through a 16 × 16 shared scratch per warp (fragment layouts are opaque).
__device__ inline void store_tile(const GramArgs& g, float* c, int64_t DA, FragC (&acc)[4][2],
                                  float (*scratch)[16 * 16], int64_t i0, int64_t j0, int wr, int wc) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
#pragma unroll
  for (int fi = 0; fi < 4; ++fi) {
#pragma unroll
    for (int fj = 0; fj < 2; ++fj) {
      nvcuda::wmma::store_matrix_sync(scratch[warp], acc[fi][fj], 16, nvcuda::wmma::mem_row_major);
      __syncwarp();
      for (int e = lane; e < 256; e += 32) {
        const int64_t i = i0 + wr * 64 + fi * 16 + e / 16, j = j0 + wc * 32 + fj * 16 + e % 16;
        if (i < DA && j < g.DS) add_out(c + i * g.DS + j, scratch[warp][e]);
      }
      __syncwarp();
    }
  }
}

template <typename T, bool kVecLoad>
__global__ void __launch_bounds__(kThreads) gram_tiles_kernel(const GramArgs g) {
  __shared__ __align__(128) Stage<T> stages[kStages];
  const int64_t split = blockIdx.y;
  const bool sym = blockIdx.x < g.n_sym;
  int64_t ti, tj;
  if (sym) {
    upper_tile(blockIdx.x, ti, tj);
  } else {
    const int64_t nb = (g.DS + kBlock - 1) / kBlock;
    ti = (blockIdx.x - g.n_sym) / nb;
    tj = (blockIdx.x - g.n_sym) % nb;
  }
  // A operand, output and sums of this block's tile kind.
  const T* xa = static_cast<const T*>(sym ? g.xs : g.xt);
  const int64_t lda = sym ? g.lds : g.ldt, DA = sym ? g.DS : g.DT;
  float* c = sym ? g.gss + split * g.split_gss : g.gts + split * g.split_gts;
  float* sums = sym ? g.ss + split * g.split_ss : g.st + split * g.split_st;
  const T* xb = static_cast<const T*>(g.xs);
  const int64_t i0 = ti * kBlock, j0 = tj * kBlock;
  const int64_t t_begin = split * g.per_split;
  const int64_t t_end = t_begin + g.per_split < g.T ? t_begin + g.per_split : g.T;
  const int steps = t_end > t_begin ? static_cast<int>((t_end - t_begin + kBK - 1) / kBK) : 0;
  const int warp = threadIdx.x / 32, wr = warp / 4, wc = warp % 4;
  // Sums of the A columns i0 + tid (threads 0..127): on the diagonal student tiles (A = B there) and on the
  // first column of cross tiles.
  const bool own_sum = (sym ? ti == tj : tj == 0) && threadIdx.x < kBlock;
  const int sum_col = threadIdx.x % kBlock;
  float partial = 0.0f;
  FragC acc[4][2];
#pragma unroll
  for (int fi = 0; fi < 4; ++fi)
#pragma unroll
    for (int fj = 0; fj < 2; ++fj) nvcuda::wmma::fill_fragment(acc[fi][fj], 0.0f);
  auto stage = [&](int s) {
    const int64_t t0 = t_begin + static_cast<int64_t>(s) * kBK;
    stage_tile<T, kVecLoad>(g, xa, lda, DA, i0, t0, t_end, stages[s % kStages].a);
    stage_tile<T, kVecLoad>(g, xb, g.lds, g.DS, j0, t0, t_end, stages[s % kStages].b);
    __pipeline_commit();
  };
  if (steps > 0) stage(0);
  for (int s = 0; s < steps; ++s) {
    if (s + 1 < steps) {
      stage(s + 1);
      __pipeline_wait_prior(1);
    } else {
      __pipeline_wait_prior(0);
    }
    __syncthreads();
    const Stage<T>& st = stages[s % kStages];
    mma_stage(st, wr, wc, acc);
    if (own_sum)
      for (int r = 0; r < kBK; ++r) partial += to_float(st.a[r][sum_col]);
    __syncthreads();  // the next iteration overwrites this stage
  }
  store_tile(g, c, DA, acc, reinterpret_cast<float (*)[16 * 16]>(&stages[0]), i0, j0, wr, wc);
  if (own_sum && i0 + sum_col < DA) add_out(sums + i0 + sum_col, partial);
}

}  // namespace liar::cuda
