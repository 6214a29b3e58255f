// Packed fp32 panels and the tile jobs that the SIMD micro-kernels run: the interface between the
// torch-facing driver (gram_cpu.cpp) and the per-ISA translation units (tiles_*.cpp), which include no
// torch header so that their target flags cannot leak into torch's inline functions.
#pragma once

#include <cstdint>

namespace liar::cpu {

// Floats per packed panel row: one AVX-512 register, two AVX2 registers.
constexpr int64_t kPanel = 16;

// A chunk of `k` tokens × `width` channels converted to fp32, panel-major: channel c of token t lives at
// data[(c / kPanel) * stride + t * kPanel + c % kPanel]. Channels past `width` up to the next panel are 0.
struct Panels {
  const float* data;
  int64_t stride;  // floats between consecutive panels (= kPanel × the chunk's capacity in tokens)
  int64_t width;
};

// C[row0:row1, col0:col1] += A[:, row0:row1]ᵀ B[:, col0:col1] over the first k packed tokens.
// C is row-major fp32 with leading dimension ldc; col0 is a multiple of kPanel. With `upper`, rows below a
// micro-column strip's diagonal are skipped: row r is needed iff r < (last column of the strip) + 1 + shift,
// shift being the output column of local column 0 minus the output row of local row 0.
struct TileJob {
  const Panels* a;
  const Panels* b;
  float* c;
  int64_t ldc;
  int64_t row0, row1, col0, col1;
  bool upper;
  int64_t shift;
};

using TileKernel = void (*)(const TileJob& job, int64_t k);

// The kernel for the instruction set in use (isa.cpp).
TileKernel select_kernel();

// One implementation per instruction set, selected at run time (gram_cpu.cpp::select_kernel).
void run_tile_generic(const TileJob& job, int64_t k);
#if defined(__x86_64__) && defined(__GNUC__)
#define LIAR_HAS_X86_KERNELS 1
void run_tile_avx2(const TileJob& job, int64_t k);
void run_tile_avx512(const TileJob& job, int64_t k);
#endif

// bf16 inputs on AMX-BF16 (gram_amx.cpp): the whole job, packing included, runs in that translation unit,
// because its operands are bf16 token pairs rather than fp32 panels. GCC 11 / clang 12 have the intrinsics.
#if defined(LIAR_HAS_X86_KERNELS) && (defined(__clang__) ? __clang_major__ >= 12 : __GNUC__ >= 11)
#define LIAR_HAS_AMX_KERNEL 1
// Tokens per packed chunk (a multiple of 32, the tokens of one TDPBF16PS). Each 32 × 32 block of C is loaded
// and stored once per chunk; single-threaded tile products on a 768 × 384 job (8192 tokens, thread CPU time)
// ran at 263–282 G multiply-adds/s with 128 tokens, 313–374 with 256 and 341–370 with 512, and 384 × 192
// jobs at 260–276 / 339–473 / 353–386: 256 keeps both operands (≤ 384 KB) in the 2 MB L2.
constexpr int64_t kAmxChunk = 256;

// G[row0:row1, col0:col1] += x_a[rows, row0:row1]ᵀ x_b[rows, col0:col1] over the n kept rows (bf16 bits,
// row-major with leading dimensions ld_a / ld_b); G row-major fp32 with leading dimension ldc; with `upper`,
// 32 × 32 blocks wholly below the diagonal are skipped. sums_a / sums_b, when set, receive the fp32 sums of
// the job's A rows / B columns (indexed from row0 / col0).
struct AmxJob {
  const uint16_t* x_a;
  const uint16_t* x_b;
  int64_t ld_a, ld_b;
  const int64_t* rows;
  int64_t n;
  int64_t row0, row1, col0, col1;
  float* c;
  int64_t ldc;
  float* sums_a;
  float* sums_b;
  bool upper;
};

// 32-bit words of the 64-byte-aligned workspace that packs `channels` channels of one chunk.
inline int64_t amx_workspace_words(int64_t channels) { return (channels + 31) / 32 * 32 * kAmxChunk / 2; }

void run_job_amx(const AmxJob& job, uint32_t* a_workspace, uint32_t* b_workspace);
// Whether bf16 inputs go to run_job_amx: the instruction set in use is "amx" (isa.cpp).
bool amx_selected();
#endif

}  // namespace liar::cpu
