// Portable build of the micro-kernel for the compiler's baseline instruction set (SSE2 on x86-64, NEON on
// aarch64): 2 rows × 1 panel (4 × 4-float vectors) = 8 accumulators, fitting 16 xmm registers.
#define LIAR_VW 4
#define LIAR_MR 2
#define LIAR_NB 1
#include "tiles_impl.h"

namespace liar::cpu {
void run_tile_generic(const TileJob& job, int64_t k) { run_tile(job, k); }
}  // namespace liar::cpu
