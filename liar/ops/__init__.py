"""liar.ops: the operations behind the pipeline, usable on their own. Imports only torch (and liar._C).

    gram_update(G, s, x, mask=None, backend="auto") -> int
    gram_update_cross(G_ss, G_ts, s_s, s_t, x_s, x_t, mask=None, backend="auto") -> int
    liar_solve(G, s, n, W, b, kept, pruned, alpha=1e-2, intercept=True, solve_fp64=False, backend="auto")
        -> Solution(weight, bias, Q, P, info: SolveInfo)

The Gram ops run fused kernels (C++ on CPU, Triton or CUDA on GPU) or the torch reference; liar_solve is the
torch reference (`liar.ops.solve`) on every device. `backend` ∈ {auto, torch, cpp, triton, cuda}: `auto`
picks, for the tensors' device and dtype, the first capable backend that passed its self-check
(`self_checks()`); a named backend runs that backend or raises. `last_backend(op)` tells which one served
the latest call, `capabilities()` what each backend can do. Every backend obeys one argument contract
(`liar.ops.contract`): any accumulator layout, the same errors for bad input.
"""

from __future__ import annotations

import torch

from liar.ops import contract, library, selfcheck, solve  # noqa: F401  (library registers the torch ops)
from liar.ops.backends import BACKENDS, available, capabilities
from liar.ops.dispatch import last_backend, record, resolve, run
from liar.ops.solve import Solution, SolveInfo


def _rows(x: torch.Tensor, mask: torch.Tensor | None) -> int:
    return x.shape[0] if mask is None else int(mask.sum())


def gram_update(
    G: torch.Tensor, s: torch.Tensor, x: torch.Tensor, mask: torch.Tensor | None = None, backend: str = "auto"
) -> int:
    """G += xᵀx (upper triangle guaranteed; read it symmetrized), s += Σx over rows kept by mask; returns rows."""
    run("gram_update", backend, (G, s, x, mask))
    return _rows(x, mask)


def gram_update_cross(
    G_ss: torch.Tensor, G_ts: torch.Tensor, s_s: torch.Tensor, s_t: torch.Tensor,
    x_s: torch.Tensor, x_t: torch.Tensor, mask: torch.Tensor | None = None, backend: str = "auto",
) -> int:
    """One pass over student x_s [T, D_s] and teacher x_t [T, D_t] rows kept by mask; returns rows.

    G_ss [D_s, D_s] += x_sᵀx_s (upper triangle guaranteed), G_ts [D_t, D_s] += x_tᵀx_s (full),
    s_s += Σ x_s, s_t += Σ x_t — all fp32 accumulators. The sequential calibration mode fits the pruned
    model's inputs (student) to the dense model's (teacher).
    """
    run("gram_update_cross", backend, (G_ss, G_ts, s_s, s_t, x_s, x_t, mask))
    return _rows(x_s, mask)


def liar_solve(
    G: torch.Tensor, s: torch.Tensor, n: int, W: torch.Tensor, b: torch.Tensor | None,
    kept: torch.Tensor, pruned: torch.Tensor, alpha: float = 1e-2, intercept: bool = True,
    solve_fp64: bool = False, backend: str = "auto",
) -> Solution:
    """LIAR solve from the upper triangle of G (never written): Solution(W_R' [d_out, R], b' [d_out] or None
    (no intercept and no bias), Q [S, R], P [S], info: λ, escalations, fallback)."""
    contract.check_solve(G, s, n, W, b, kept, pruned, float(alpha))
    record("liar_solve", resolve("liar_solve", backend, G.device, W.dtype))
    return solve.liar_solve(G, s, n, W, b, kept, pruned, float(alpha), bool(intercept), bool(solve_fp64))


def self_checks() -> dict[str, str]:
    """Every kernel self-check run in this process: 'backend op device dtype' -> 'ok' or why it failed."""
    return selfcheck.results()


__all__ = ["BACKENDS", "Solution", "SolveInfo", "available", "capabilities", "gram_update", "gram_update_cross",
           "last_backend", "liar_solve", "resolve", "self_checks"]
