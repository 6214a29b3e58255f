"""torch.library schemas for the liar ops: one schema and one fake each; the reference is the default kernel.

Device kernels (C++ on CPU, CUDA/Triton on GPU) are registered on top of these by `liar.ops.backends`.
"""

from __future__ import annotations

import torch
from torch.library import custom_op

from liar.ops import reference


@custom_op("liar::gram_update", mutates_args=("G", "s"))
def gram_update(G: torch.Tensor, s: torch.Tensor, x: torch.Tensor, mask: torch.Tensor | None) -> int:
    return reference.gram_update(G, s, x, mask)


@gram_update.register_fake
def _(G, s, x, mask):
    return x.shape[0] if mask is None else torch.library.get_ctx().new_dynamic_size()


@custom_op("liar::liar_solve", mutates_args=())
def liar_solve(
    G: torch.Tensor, s: torch.Tensor, n: int, W: torch.Tensor, b: torch.Tensor | None,
    kept: torch.Tensor, pruned: torch.Tensor, alpha: float, intercept: bool, solve_fp64: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return reference.liar_solve(G, s, n, W, b, kept, pruned, alpha, intercept, solve_fp64)


@liar_solve.register_fake
def _(G, s, n, W, b, kept, pruned, alpha, intercept, solve_fp64):
    dtype = torch.float64 if solve_fp64 else torch.float32
    R, S = kept.shape[0], pruned.shape[0]
    return (
        W.new_empty(W.shape[0], R),
        W.new_empty(W.shape[0]) if b is None else b.new_empty(b.shape),
        G.new_empty(S, R, dtype=dtype),
        G.new_empty(S, dtype=dtype),
        G.new_empty(3, dtype=torch.float64),
    )
