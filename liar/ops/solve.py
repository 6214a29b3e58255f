"""The LIAR solve as pure functions of (G, s, n): one damped solve for the dense and the sequential paths.

One consumer layer y = W x + b, W: [d_out, D]; kept input channels R, pruned S; G holds Σ x xᵀ in its upper
triangle (the lower one is never read, so G from any backend works and is never written), s = Σ x, n tokens.

    Q = C_SR (C_RR + λI)⁻¹,   λ = α · mean(diag C_RR),   P = μ_S − Q μ_R
    W_R' = W_R + W_S Q,       b' = b + W_S P

The no-intercept variant uses the uncentered second moment G/N in place of C and P = 0.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import NamedTuple

import torch

log = logging.getLogger(__name__)

MAX_ESCALATIONS = 8
ESCALATION_FACTOR = 10.0
# Rows gathered per step when a block is read from the upper triangle: bounds the two temporaries.
BLOCK_ROWS = 1024


@dataclass(frozen=True)
class SolveInfo:
    """How one damped system was solved: the λ used, escalations of λ, and the fallback taken (if any)."""

    lam: float
    escalations: int = 0
    fallback: str | None = None


class Solution(NamedTuple):
    """liar_solve's result: W_R' [d_out, R], b' [d_out] (None without intercept and bias), Q [S, R], P [S]."""

    weight: torch.Tensor
    bias: torch.Tensor | None
    Q: torch.Tensor
    P: torch.Tensor
    info: SolveInfo


def sym_block(G: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Block [rows, cols] of the symmetric matrix whose upper triangle G holds, in `dtype`; G is only read."""
    rows, cols = rows.to(G.device), cols.to(G.device)
    out = torch.empty(rows.numel(), cols.numel(), dtype=dtype, device=G.device)
    for start in range(0, rows.numel(), BLOCK_ROWS):
        r = rows[start:start + BLOCK_ROWS]
        upper = G[r[:, None], cols]  # right where r ≤ c
        lower = G[cols[:, None], r].T  # G[c, r]: right where c ≤ r
        out[start:start + BLOCK_ROWS] = torch.where(r[:, None] <= cols[None, :], upper, lower)
    return out


def moment(G: torch.Tensor, s: torch.Tensor, n: int, rows: torch.Tensor, cols: torch.Tensor, intercept: bool,
           dtype: torch.dtype) -> torch.Tensor:
    """Block [rows, cols] of C = G/N − μμᵀ (or of G/N without intercept), formed in `dtype`.

    Only the block is converted: the subtraction, where precision is lost, happens in `dtype`.
    """
    block = sym_block(G, rows, cols, dtype).div_(n)
    if intercept:
        mu = s.to(dtype) / n
        block.addr_(mu[rows.to(mu.device)], mu[cols.to(mu.device)], alpha=-1.0)
    return block


def _fallback_solve(A: torch.Tensor, B: torch.Tensor, lam: float) -> tuple[torch.Tensor, str]:
    """Float64 eigh with eigenvalues clamped at 0, then lstsq if eigh itself fails."""
    A64, B64 = A.double(), B.double()
    try:
        evals, evecs = torch.linalg.eigh(A64)
        inv = 1.0 / (evals.clamp_min(0.0) + lam)
        return evecs @ (inv[:, None] * (evecs.T @ B64)), "eigh"
    except torch.linalg.LinAlgError:
        eye = torch.eye(A.shape[0], dtype=torch.float64, device=A.device)
        return torch.linalg.lstsq((A64 + lam * eye).cpu(), B64.cpu()).solution.to(A.device), "lstsq"


def damped_solve(
    A: torch.Tensor, B: torch.Tensor, alpha: float, dtype: torch.dtype = torch.float32, overwrite_a: bool = False,
) -> tuple[torch.Tensor, SolveInfo]:
    """X = (A + λI)⁻¹ B with λ = alpha · mean(diag A); A: [R, R] symmetric PSD, B: [R, S] → X: [R, S].

    Cholesky (`cholesky_ex`, no exceptions) in `dtype`; on failure λ grows ×10 up to 8 times, then a float64
    eigh solve. Never silent: the returned SolveInfo says what happened. The damping is added in place to A
    (to a copy unless `overwrite_a` and A is already in `dtype`), so the solve holds two R×R matrices.
    """
    if not (math.isfinite(alpha) and alpha >= 0):
        raise ValueError(f"alpha must be a finite number ≥ 0 (the damping λ = alpha · mean(diag A)); got {alpha}")
    if not (torch.isfinite(A).all() and torch.isfinite(B).all()):
        raise FloatingPointError("non-finite statistics reached the solver; check the calibration activations")
    A, B = A.to(dtype, copy=not overwrite_a), B.to(dtype)
    diag = A.diagonal()
    scale = float(diag.mean()) if A.numel() else 0.0
    lam, applied = alpha * scale, 0.0
    floor = max(scale, 1e-12) * 1e-6
    for escalation in range(MAX_ESCALATIONS + 1):
        diag.add_(lam - applied)
        applied = lam
        L, info = torch.linalg.cholesky_ex(A)
        if int(info) == 0:
            X = torch.cholesky_solve(B, L)
            if torch.isfinite(X).all():
                if escalation:
                    log.warning("Cholesky needed λ raised %d× to %.3g", escalation, lam)
                return X, SolveInfo(lam=lam, escalations=escalation)
        del L
        lam = max(lam * ESCALATION_FACTOR, floor)
    diag.sub_(applied)
    lam0 = max(alpha * scale, floor)
    X, how = _fallback_solve(A, B, lam0)
    log.warning("Cholesky failed after %d escalations; solved by %s with λ=%.3g", MAX_ESCALATIONS, how, lam0)
    return X.to(dtype), SolveInfo(lam=lam0, escalations=MAX_ESCALATIONS, fallback=how)


def interpolation(
    G: torch.Tensor, s: torch.Tensor, n: int, kept: torch.Tensor, pruned: torch.Tensor, alpha: float = 1e-2,
    intercept: bool = True, dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor, SolveInfo]:
    """Q = C_SR (C_RR + λI)⁻¹ [S, R] and P = μ_S − Q μ_R [S] (P = 0 and uncentered moments without intercept)."""
    A = moment(G, s, n, kept, kept, intercept, dtype)
    Qt, info = damped_solve(A, moment(G, s, n, kept, pruned, intercept, dtype), alpha, dtype, overwrite_a=True)
    Q = Qt.T
    if intercept:
        mu = s.to(dtype) / n
        P = mu[pruned.to(mu.device)] - Q @ mu[kept.to(mu.device)]
    else:
        P = torch.zeros(pruned.numel(), dtype=dtype, device=Q.device)
    return Q, P, info


def fold(
    W: torch.Tensor, b: torch.Tensor | None, kept: torch.Tensor, pruned: torch.Tensor,
    Q: torch.Tensor | None, P: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """W_R' = W_R + W_S Q and b' = b + W_S P, computed in fp32 (or Q's dtype) and cast back to W's dtype."""
    kept, pruned = kept.to(W.device), pruned.to(W.device)
    work = torch.promote_types(torch.float32, Q.dtype if Q is not None else torch.float32)
    W_R = W.index_select(1, kept).to(work)
    W_S = W.index_select(1, pruned).to(work)
    if Q is not None:
        W_R = W_R + W_S @ Q.to(work)
    bias = None if b is None else b.to(work)
    if P is not None:
        shift = W_S @ P.to(work)
        bias = shift if bias is None else bias + shift
    return W_R.to(W.dtype), None if bias is None else bias.to(W.dtype if b is None else b.dtype)


def liar_solve(
    G: torch.Tensor, s: torch.Tensor, n: int, W: torch.Tensor, b: torch.Tensor | None,
    kept: torch.Tensor, pruned: torch.Tensor, alpha: float = 1e-2, intercept: bool = True, solve_fp64: bool = False,
) -> Solution:
    """The LIAR interpolation of the pruned channels folded into the kept weights and the bias.

    Without intercept and without a bias the folded bias stays None.
    """
    dtype = torch.float64 if solve_fp64 else torch.float32
    Q, P, info = interpolation(G, s, n, kept, pruned, alpha, intercept, dtype)
    weight, bias = fold(W, b, kept, pruned, Q, P if intercept else None)
    return Solution(weight, bias, Q, P, info)
