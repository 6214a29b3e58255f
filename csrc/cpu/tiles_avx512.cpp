// AVX-512 build of the micro-kernel: 8 rows × 3 panels = 24 zmm accumulators (of 32), leaving room for
// the 3 B vectors and the broadcast A value.
#include "tiles.h"

#ifdef LIAR_HAS_X86_KERNELS
#pragma GCC target("avx512f,avx512vl,avx2,fma")
#define LIAR_VW 16
#define LIAR_MR 8
#define LIAR_NB 3
#include "tiles_impl.h"

namespace liar::cpu {
void run_tile_avx512(const TileJob& job, int64_t k) { run_tile(job, k); }
}  // namespace liar::cpu
#endif
