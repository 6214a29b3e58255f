// AMX-BF16 Gram jobs for bf16 inputs: the tile unit multiplies bf16 pairs exactly and accumulates in fp32
// (TDPBF16PS: C[16×16] += A[16×32] · B[32×16], 8192 multiply-adds per instruction).
//
// Why AMX and not AVX512-BF16: on this workplace's CPU (Intel Xeon, KVM, 2.6 GHz, avx512_bf16 and amx_bf16 in
// /proc/cpuinfo) a register-only loop of 12 independent accumulators measured, single-threaded, under load:
//   VDPBF16PS zmm   12–18 G multiply-adds/s   (32 per instruction, but issued at a quarter of the FMA's rate)
//   VFMADD231PS zmm 27–35 G multiply-adds/s   (what the avx512 micro-kernel uses)
//   TDPBF16PS      400–550 G multiply-adds/s  (4 independent 16×16 accumulator tiles)
// so VDPBF16PS would have been slower than the fp32 kernel it was meant to replace, and AMX is ~15× faster.
//
// A job (rows × cols of C, from gram_cpu.cpp) streams its tokens in chunks: pack the chunk's A rows and B
// columns into the tile layouts below (vectorized, fusing the fp32 column sums), then run 2×2 blocks of
// 16×16 C tiles over the chunk. This file includes no torch header (see tiles.h).
#include "tiles.h"

#ifdef LIAR_HAS_AMX_KERNEL
#pragma GCC target("avx512f,avx512bw,avx512vl,avx2,fma,amx-tile,amx-bf16")
#include <immintrin.h>

namespace liar::cpu {
namespace {

// ---- Constants ----------------------------------------------------------------------------------------------
// A TDPBF16PS step: 16 token pairs (32 tokens); a tile row is 64 bytes = 16 fp32 or 16 bf16 pairs.
constexpr int64_t kPairsPerStep = 16;
constexpr int64_t kTokensPerStep = 2 * kPairsPerStep;
constexpr int64_t kTile = 16;
// C is updated in 2×2-tile blocks: 4 accumulator tiles (tmm0-3), 2 A tiles (tmm4-5) and 2 B tiles (tmm6-7),
// so each loaded A or B tile feeds two products.
constexpr int64_t kBlock = 2 * kTile;
// Words (bf16 pairs) in one packed panel: 16 channels × kAmxChunk / 2 pairs.
constexpr int64_t kPanelWords = kTile * kAmxChunk / 2;

// ---- Packing ------------------------------------------------------------------------------------------------
// Both operands are packed as panels of 16 channels, one 16 × 16-word block per step, block s at
// panel + s · 256 words. In a B block, row i holds pair i for the 16 channels (word = token 2i in the low
// half, token 2i + 1 in the high half: the pair-interleaved layout TDPBF16PS wants for B). An A block is the
// transpose of that: row j holds the 16 pairs of channel j.

struct Rows {
  const uint16_t* x;      // bf16 bits, row-major [tokens, ld]
  int64_t ld;
  const int64_t* rows;    // kept token rows of this chunk
  int64_t k;              // tokens in this chunk
};

// 16 × 16 dword transpose in registers (unpack 32, unpack 64, then two 128-bit lane shuffles).
inline void transpose16(__m512i (&r)[16]) {
  __m512i t[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
  }
  __m512i u[16];  // u[4g + c], 128-bit lane L: column 4L + c of rows 4g .. 4g + 3
  for (int g = 0; g < 4; ++g) {
    u[4 * g] = _mm512_unpacklo_epi64(t[4 * g], t[4 * g + 2]);
    u[4 * g + 1] = _mm512_unpackhi_epi64(t[4 * g], t[4 * g + 2]);
    u[4 * g + 2] = _mm512_unpacklo_epi64(t[4 * g + 1], t[4 * g + 3]);
    u[4 * g + 3] = _mm512_unpackhi_epi64(t[4 * g + 1], t[4 * g + 3]);
  }
  for (int c = 0; c < 4; ++c) {
    const __m512i p = _mm512_shuffle_i32x4(u[c], u[4 + c], 0x44), q = _mm512_shuffle_i32x4(u[c], u[4 + c], 0xEE);
    const __m512i p2 = _mm512_shuffle_i32x4(u[8 + c], u[12 + c], 0x44);
    const __m512i q2 = _mm512_shuffle_i32x4(u[8 + c], u[12 + c], 0xEE);
    r[c] = _mm512_shuffle_i32x4(p, p2, 0x88);
    r[4 + c] = _mm512_shuffle_i32x4(p, p2, 0xDD);
    r[8 + c] = _mm512_shuffle_i32x4(q, q2, 0x88);
    r[12 + c] = _mm512_shuffle_i32x4(q, q2, 0xDD);
  }
}

// 16 channels (mask m) of token t as 16 dwords holding the bf16 bits in their low halves; 0 past the chunk.
inline __m512i load_token(const Rows& src, int64_t t, int64_t c, __mmask16 m) {
  if (t >= src.k) return _mm512_setzero_si512();
  return _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, src.x + src.rows[t] * src.ld + c));
}

// Packing costs ~0.5 ns per element (thread CPU time, under load), as much as the tile products it feeds on a
// 384 × 384 job (8192 tokens: 3.2 ms packing, 2.5 ms products); packing 128 channels token by token instead
// of 16 at a time, or prefetching rows 8–64 tokens ahead, measured the same. So the job size (each job packs
// its rows and columns), not the tile rate, bounds this kernel.
//
// Channels [c0, c1) of the chunk into panels at dst (zero channels up to c_pad, zero tokens up to whole
// steps); adds the channels' fp32 sums to `sums` when set. `transposed` writes A blocks, otherwise B blocks.
void pack(const Rows& src, int64_t c0, int64_t c1, int64_t c_pad, bool transposed, uint32_t* dst, float* sums) {
  const int64_t steps = (src.k + kTokensPerStep - 1) / kTokensPerStep;
  for (int64_t p0 = c0; p0 < c_pad; p0 += kTile) {
    const int64_t n = p0 >= c1 ? 0 : (c1 - p0 < kTile ? c1 - p0 : kTile);
    const __mmask16 m = static_cast<__mmask16>((1u << n) - 1);
    uint32_t* panel = dst + (p0 - c0) / kTile * kPanelWords;
    __m512 sum = _mm512_setzero_ps();
    for (int64_t s = 0; s < steps; ++s) {
      __m512i w[16];
      for (int i = 0; i < 16; ++i) {
        const int64_t t = s * kTokensPerStep + 2 * i;
        const __m512i lo = load_token(src, t, p0, m), hi = _mm512_slli_epi32(load_token(src, t + 1, p0, m), 16);
        sum = _mm512_add_ps(sum, _mm512_castsi512_ps(_mm512_slli_epi32(lo, 16)));  // bf16 → fp32 is a shift
        sum = _mm512_add_ps(sum, _mm512_castsi512_ps(hi));
        w[i] = _mm512_or_si512(lo, hi);
      }
      if (transposed) transpose16(w);
      for (int i = 0; i < 16; ++i) _mm512_store_si512(panel + s * kTile * kTile + i * kTile, w[i]);
    }
    if (sums != nullptr && n > 0)
      _mm512_mask_storeu_ps(sums + (p0 - c0), m, _mm512_add_ps(_mm512_maskz_loadu_ps(m, sums + (p0 - c0)), sum));
  }
}

// ---- The kernel ---------------------------------------------------------------------------------------------
// Palette 1: tmm0-7 all 16 rows × 64 bytes.
struct alignas(64) TileConfig {
  uint8_t palette, start_row;
  uint8_t reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
};

void configure_tiles() {
  TileConfig cfg{};
  cfg.palette = 1;
  for (int i = 0; i < 8; ++i) {
    cfg.colsb[i] = 64;
    cfg.rows[i] = kTile;
  }
  // GCC's _tile_loadconfig tells the compiler it reads 8 bytes, so at -O3 the other 56 stores were dropped
  // and LDTILECFG faulted on garbage: make the whole struct visible as memory first.
  __asm__ volatile("" : : "r"(&cfg) : "memory");
  _tile_loadconfig(&cfg);
}

// C[rb:rb+32, cb:cb+32] += A[rb:rb+32]ᵀ-block × B[:, cb:cb+32] over `steps` steps; out/ld: where the block's
// fp32 accumulators live (G itself, or a 32 × 32 scratch for blocks that cross the job's edge).
inline void block(const uint32_t* a, const uint32_t* b, int64_t steps, float* out, int64_t ld, bool load) {
  const int64_t ldb = ld * 4;
  if (load) {
    _tile_loadd(0, out, ldb);
    _tile_loadd(1, out + kTile, ldb);
    _tile_loadd(2, out + kTile * ld, ldb);
    _tile_loadd(3, out + kTile * ld + kTile, ldb);
  } else {
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
  }
  for (int64_t s = 0; s < steps; ++s) {
    const int64_t off = s * kTile * kTile;
    _tile_loadd(4, a + off, 64);
    _tile_loadd(5, a + kPanelWords + off, 64);
    _tile_loadd(6, b + off, 64);
    _tile_loadd(7, b + kPanelWords + off, 64);
    _tile_dpbf16ps(0, 4, 6);
    _tile_dpbf16ps(1, 4, 7);
    _tile_dpbf16ps(2, 5, 6);
    _tile_dpbf16ps(3, 5, 7);
  }
  _tile_stored(0, out, ldb);
  _tile_stored(1, out + kTile, ldb);
  _tile_stored(2, out + kTile * ld, ldb);
  _tile_stored(3, out + kTile * ld + kTile, ldb);
}

// C[0:rows, 0:cols] += Aᵀ B for one packed chunk of `steps` steps; with `upper`, blocks wholly below the
// diagonal (global row > global column everywhere; shift = column offset − row offset) are skipped.
void multiply(const uint32_t* a, const uint32_t* b, int64_t steps, const AmxJob& job) {
  const int64_t rows = job.row1 - job.row0, cols = job.col1 - job.col0, shift = job.col0 - job.row0;
  float* c = job.c + job.row0 * job.ldc + job.col0;
  alignas(64) float scratch[kBlock * kBlock];
  for (int64_t cb = 0; cb < cols; cb += kBlock) {
    const int64_t row_end = job.upper && cb + kBlock + shift < rows ? cb + kBlock + shift : rows;
    const uint32_t* bp = b + cb / kTile * kPanelWords;
    for (int64_t rb = 0; rb < row_end; rb += kBlock) {
      const uint32_t* ap = a + rb / kTile * kPanelWords;
      if (rb + kBlock <= rows && cb + kBlock <= cols) {
        block(ap, bp, steps, c + rb * job.ldc + cb, job.ldc, true);
        continue;
      }
      block(ap, bp, steps, scratch, kBlock, false);
      for (int64_t r = 0; r < kBlock && rb + r < rows; ++r)
        for (int64_t j = 0; j < kBlock && cb + j < cols; ++j) c[(rb + r) * job.ldc + cb + j] += scratch[r * kBlock + j];
    }
  }
}

inline int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

}  // namespace

// ---- The public op --------------------------------------------------------------------------------------------
// One job over all n tokens, chunk by chunk (tiles.h: AmxJob). Each thread configures its own tiles.
void run_job_amx(const AmxJob& job, uint32_t* a_buf, uint32_t* b_buf) {
  configure_tiles();
  for (int64_t t0 = 0; t0 < job.n; t0 += kAmxChunk) {
    const int64_t k = job.n - t0 < kAmxChunk ? job.n - t0 : kAmxChunk;
    const Rows a{job.x_a, job.ld_a, job.rows + t0, k}, b{job.x_b, job.ld_b, job.rows + t0, k};
    pack(a, job.row0, job.row1, job.row0 + round_up(job.row1 - job.row0, kBlock), true, a_buf, job.sums_a);
    pack(b, job.col0, job.col1, job.col0 + round_up(job.col1 - job.col0, kBlock), false, b_buf, job.sums_b);
    multiply(a_buf, b_buf, (k + kTokensPerStep - 1) / kTokensPerStep, job);
  }
  _tile_release();
}

}  // namespace liar::cpu
#endif
