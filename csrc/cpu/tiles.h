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

}  // namespace liar::cpu
