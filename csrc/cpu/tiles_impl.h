// The register-blocked micro-kernel, written once with GCC vector extensions and compiled per instruction
// set: each tiles_<isa>.cpp sets LIAR_VW (floats per vector), LIAR_MR (rows per micro-tile) and LIAR_NB
// (panels per micro-tile), then includes this file after its `#pragma GCC target`. Everything here has
// internal linkage and no standard-library template is instantiated here, so the per-ISA copies never
// merge with each other or with baseline code at link time.
#pragma once

#include "tiles.h"

namespace liar::cpu {
namespace {

typedef float vec __attribute__((vector_size(LIAR_VW * 4)));
typedef float uvec __attribute__((vector_size(LIAR_VW * 4), aligned(4)));  // unaligned rows of G

constexpr int kVW = LIAR_VW;
constexpr int kMR = LIAR_MR;
constexpr int kVPP = kPanel / kVW;  // vectors per panel row

inline int64_t min64(int64_t x, int64_t y) { return x < y ? x : y; }

inline const float* channel_ptr(const Panels& p, int64_t c) {
  return p.data + (c / kPanel) * p.stride + c % kPanel;
}

// acc[r][v] = Σ_t a_r[t] · b[t][v] for NB panels of B: MR × NB·VPP accumulators stay in registers
// (24 zmm for AVX-512 at MR = 8, NB = 3), each B vector is loaded once per token and reused MR times.
template <int NB>
inline void micro(int64_t k, const float* const (&a)[kMR], const float* b, int64_t bstride,
                  vec (&acc)[kMR][NB * kVPP]) {
  constexpr int NV = NB * kVPP;
#pragma GCC unroll 16
  for (int r = 0; r < kMR; ++r)
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) acc[r][v] = vec{};
  for (int64_t t = 0; t < k; ++t) {
    vec bv[NV];
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v)
      bv[v] = *reinterpret_cast<const vec*>(b + (v / kVPP) * bstride + t * kPanel + (v % kVPP) * kVW);
#pragma GCC unroll 16
    for (int r = 0; r < kMR; ++r) {
      const float av = a[r][t * kPanel];
#pragma GCC unroll 16
      for (int v = 0; v < NV; ++v) acc[r][v] += bv[v] * av;
    }
  }
}

template <int NB>
inline void store(const vec (&acc)[kMR][NB * kVPP], float* c, int64_t ldc, int64_t mr, int64_t nc) {
  constexpr int NV = NB * kVPP;
  if (mr == kMR && nc == NV * kVW) {
#pragma GCC unroll 16
    for (int r = 0; r < kMR; ++r)
#pragma GCC unroll 16
      for (int v = 0; v < NV; ++v) *reinterpret_cast<uvec*>(c + r * ldc + v * kVW) += acc[r][v];
    return;
  }
  float tile[kMR][NV * kVW];
  __builtin_memcpy(tile, acc, sizeof(tile));
  for (int64_t r = 0; r < mr; ++r)
    for (int64_t j = 0; j < nc; ++j) c[r * ldc + j] += tile[r][j];
}

// All micro-tiles of one column strip of NB panels: B stays in L1 while the rows stream past.
template <int NB>
inline void strip(const TileJob& job, int64_t k, int64_t col, int64_t nc) {
  const float* b = channel_ptr(*job.b, col);
  const int64_t row_end = job.upper ? min64(job.row1, col + nc + job.shift) : job.row1;
  vec acc[kMR][NB * kVPP];
  for (int64_t row = job.row0; row < row_end; row += kMR) {
    const int64_t mr = min64(kMR, row_end - row);
    const float* a[kMR];
    for (int r = 0; r < kMR; ++r) a[r] = channel_ptr(*job.a, row + min64(r, mr - 1));
    micro<NB>(k, a, b, job.b->stride, acc);
    store<NB>(acc, job.c + row * job.ldc + col, job.ldc, mr, nc);
  }
}

// Narrower strips for the last columns, so no micro-tile reads a panel past the packed width.
template <int NB>
inline void strip_upto(const TileJob& job, int64_t k, int64_t col, int64_t nc) {
  if constexpr (NB > 1) {
    if (nc <= (NB - 1) * kPanel) return strip_upto<NB - 1>(job, k, col, nc);
  }
  strip<NB>(job, k, col, nc);
}

inline void run_tile(const TileJob& job, int64_t k) {
  constexpr int64_t width = LIAR_NB * kPanel;
  for (int64_t col = job.col0; col < job.col1; col += width)
    strip_upto<LIAR_NB>(job, k, col, min64(width, job.col1 - col));
}

}  // namespace
}  // namespace liar::cpu
