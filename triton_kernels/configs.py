"""Launch configurations of the Gram kernel: an autotune list on GPU, one small fixed config in the interpreter.

Tiles are square (BLOCK × BLOCK) because the symmetric launch indexes upper-triangle tile pairs (i ≤ j).
`LIAR_TRITON_AUTOTUNE=0` (read at import) keeps the first GPU config: tests on a GPU compile every kernel
variant, and autotuning each of them would cost minutes.
"""

from __future__ import annotations

import os

import triton

from liar.triton_kernels import interpreting

# 128 × 128 fp32 accumulators = 64 registers per thread at 8 warps, the largest square tile that does not
# spill; 64-wide tiles help when D is small (D = 576 has only 15 upper 128-tiles for 132 multiprocessors).
GPU_CONFIGS = [
    triton.Config({"BLOCK": 128, "BLOCK_K": 64}, num_warps=8, num_stages=3),
    triton.Config({"BLOCK": 128, "BLOCK_K": 64}, num_warps=4, num_stages=4),
    triton.Config({"BLOCK": 128, "BLOCK_K": 32}, num_warps=8, num_stages=4),
    triton.Config({"BLOCK": 64, "BLOCK_K": 64}, num_warps=4, num_stages=4),
]

# The interpreter runs each program step in numpy, so its cost is the step count: 64-wide tiles run a D = 577,
# 1000-token update in 55 programs × 16 steps (4 s) where 32-wide tiles took 190 × 32 (18 s).
INTERPRETER_CONFIGS = [triton.Config({"BLOCK": 64, "BLOCK_K": 64}, num_warps=4, num_stages=1)]


def gram_configs() -> list[triton.Config]:
    if interpreting():
        return INTERPRETER_CONFIGS
    return GPU_CONFIGS[:1] if os.environ.get("LIAR_TRITON_AUTOTUNE", "1") == "0" else GPU_CONFIGS
