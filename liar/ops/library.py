"""torch.library schemas of the liar ops, for torch.compile and other torch.library users.

The accumulating ops mutate exactly their fp32 sums and return nothing: a mutating custom op that returns an
int cannot be functionalized (opcheck's test_aot_dispatch_dynamic fails), so the Python entry points
(`liar.ops.gram_update`, ...) count the rows themselves. Their body runs the backend `auto` picks
(`liar.ops.dispatch`), after the shared argument contract. `liar::liar_solve` mutates nothing (it reads the
upper triangle of G) and returns tensors only; its solve report (`SolveInfo`) comes from the Python entry
point `liar.ops.liar_solve`, because a custom op cannot return a traced float.
"""

from __future__ import annotations

import torch
from torch.library import custom_op

from liar.ops import contract, dispatch, solve


@custom_op("liar::gram_update", mutates_args=("G", "s"))
def gram_update(G: torch.Tensor, s: torch.Tensor, x: torch.Tensor, mask: torch.Tensor | None) -> None:
    dispatch.run("gram_update", "auto", (G, s, x, mask))


@gram_update.register_fake
def _(G, s, x, mask):
    contract.check_gram(G, s, x, mask)


@custom_op("liar::gram_update_cross", mutates_args=("G_ss", "G_ts", "s_s", "s_t"))
def gram_update_cross(
    G_ss: torch.Tensor, G_ts: torch.Tensor, s_s: torch.Tensor, s_t: torch.Tensor,
    x_s: torch.Tensor, x_t: torch.Tensor, mask: torch.Tensor | None,
) -> None:
    dispatch.run("gram_update_cross", "auto", (G_ss, G_ts, s_s, s_t, x_s, x_t, mask))


@gram_update_cross.register_fake
def _(G_ss, G_ts, s_s, s_t, x_s, x_t, mask):
    contract.check_cross(G_ss, G_ts, s_s, s_t, x_s, x_t, mask)


@custom_op("liar::liar_solve", mutates_args=())
def liar_solve(
    G: torch.Tensor, s: torch.Tensor, n: int, W: torch.Tensor, b: torch.Tensor | None,
    kept: torch.Tensor, pruned: torch.Tensor, alpha: float, intercept: bool, solve_fp64: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(W_R' [d_out, R], b' [d_out] (zeros when there is no bias to fold), Q [S, R], P [S])."""
    contract.check_solve(G, s, n, W, b, kept, pruned, alpha)
    weight, bias, Q, P, _ = solve.liar_solve(G, s, n, W, b, kept, pruned, alpha, intercept, solve_fp64)
    return weight, W.new_zeros(W.shape[0]) if bias is None else bias, Q, P


@liar_solve.register_fake
def _(G, s, n, W, b, kept, pruned, alpha, intercept, solve_fp64):
    dtype = torch.float64 if solve_fp64 else torch.float32
    R, S = kept.shape[0], pruned.shape[0]
    return (
        W.new_empty(W.shape[0], R),
        W.new_empty(W.shape[0]) if b is None else b.new_empty(b.shape),
        G.new_empty(S, R, dtype=dtype),
        G.new_empty(S, dtype=dtype),
    )
