// AVX2 + FMA build of the micro-kernel: 6 rows × 1 panel (2 ymm) = 12 ymm accumulators (of 16).
#include "tiles.h"

#ifdef LIAR_HAS_X86_KERNELS
#pragma GCC target("avx2,fma")
#define LIAR_VW 8
#define LIAR_MR 6
#define LIAR_NB 1
#include "tiles_impl.h"

namespace liar::cpu {
void run_tile_avx2(const TileJob& job, int64_t k) { run_tile(job, k); }
}  // namespace liar::cpu
#endif
