"""LIAR reconstruction around the pure solve of `liar.ops.solve`: the calibration error forms and the
sequential (student/teacher) fit (DESIGN.md §1).

One consumer layer y = W x + b, W: [d_out, D]; kept input channels R, pruned S. `Q = 0, P = μ_S` is FLAP's
bias compensation ("bias"); `Q = 0, P = 0` is plain slicing ("none"); both need no solve.

Worked example (D = 3, keep channels 0 and 2, channel 1 is a copy of channel 0):
    x = [[1, 1, 5], [2, 2, 3], [3, 3, 4]]  → Q ≈ [[1, 0]] (α → 0), so W_R' = W_R + W_S·[1, 0]:
    the pruned column is added onto column 0 and the output is unchanged.

Error forms read only the blocks of G they need (never G's lower triangle, never a D×D copy):
    ‖Y‖²      = tr(W G Wᵀ) + 2 bᵀ W s + N‖b‖²                     (upper triangle, row chunks)
    none      = tr(W_S G_SS W_Sᵀ)                                  (S×S block)
    bias      = N · tr(W_S C_SS W_Sᵀ)
    liar      = N · tr(W_S E W_Sᵀ),  E = C_SS − Q C_RS − λ Q Qᵀ      (S×S, S×R blocks: Q(C_RR + λI) = C_SR)
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from liar.ops.solve import BLOCK_ROWS, SolveInfo, damped_solve, fold, moment, sym_block

if TYPE_CHECKING:
    from liar.stats import CrossStats, GramStats

log = logging.getLogger(__name__)

__all__ = ["Reconstruction", "SolveInfo", "damped_solve", "fold", "output_energy", "relative_errors",
           "sequential_error", "sequential_fit"]


@dataclass
class Reconstruction:
    """A consumer's new weight [d_out, R] and bias [d_out] (None = no bias), plus what produced them."""

    weight: torch.Tensor
    bias: torch.Tensor | None
    info: SolveInfo | None = None
    errors: dict[str, float] = field(default_factory=dict)


# TF32 (10-bit mantissa, fp32 accumulation) where a GPU has it, for the positive quadratic forms of the reported
# errors only: each is a sum of non-negative terms, so rounding the inputs by ≤ 2⁻¹¹ moves it by ≤ ~1e-3 relative
# (tests/test_reconstruct.py emulates it: ≤ 8e-5 measured), never across a cancellation. The residual moment E and the
# solve are differences of close terms and stay in full fp32/fp64.
TF32_RELATIVE_TOLERANCE = 2e-3


@contextmanager
def _tf32(device: torch.device) -> Iterator[None]:
    """TF32 matmuls on CUDA inside the block (a no-op elsewhere)."""
    if device.type != "cuda":
        yield
        return
    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved


def output_energy(G: torch.Tensor, s: torch.Tensor, n: int, W: torch.Tensor, b: torch.Tensor | None,
                  dtype: torch.dtype) -> float:
    """Σ_t ‖W x_t + b‖² = tr(W G Wᵀ) + 2 bᵀ W s + N‖b‖², reading G's upper triangle in row chunks.

    tr(W G Wᵀ) = 2 Σ_i W_:iᵀ (U Wᵀ)_i − Σ_i G_ii ‖W_:i‖² with U = triu(G): temporaries of BLOCK_ROWS × D.
    """
    Wd = W.to(device=G.device, dtype=dtype)
    energy = 0.0
    for start in range(0, G.shape[0], BLOCK_ROWS):
        rows = slice(start, min(start + BLOCK_ROWS, G.shape[0]))
        upper = G[rows].to(dtype).triu(start)
        energy += 2.0 * float((Wd[:, rows].T * (upper @ Wd.T)).sum())
    energy -= float(G.diagonal().to(dtype) @ Wd.square().sum(0))
    if b is not None:
        bd = b.to(device=G.device, dtype=dtype)
        energy += 2.0 * float(bd @ (Wd @ s.to(dtype))) + n * float(bd @ bd)
    return max(energy, 0.0)


def _trace_form(W_S: torch.Tensor, M: torch.Tensor) -> float:
    """tr(W_S M W_Sᵀ) for a symmetric M [S, S]."""
    return float(((W_S @ M) * W_S).sum())


def relative_errors(
    stats: GramStats, W: torch.Tensor, b: torch.Tensor | None, kept: torch.Tensor, pruned: torch.Tensor,
    solved: tuple[torch.Tensor, SolveInfo] | None = None, intercept: bool = True,
    dtype: torch.dtype = torch.float32,
) -> dict[str, float]:
    """Relative output error ‖Y − Y'‖² / ‖Y‖² on the calibration data of none and bias, and of liar when
    `solved` = (Q, info) of its solve is given (`intercept` as that solve had it)."""
    G, s, n = stats.G, stats.s, stats.n
    kept, pruned = kept.to(G.device), pruned.to(G.device)
    W_S = W.to(device=G.device, dtype=dtype).index_select(1, pruned)
    E = None
    if solved is not None:
        Q, info = solved
        E = residual_moment(G, s, n, kept, pruned, Q.to(dtype), info, intercept, dtype)
    with _tf32(G.device):
        total = max(output_energy(G, s, n, W, b, dtype), 1e-30)
        errors = {"none": _trace_form(W_S, sym_block(G, pruned, pruned, dtype)),
                  "bias": n * _trace_form(W_S, moment(G, s, n, pruned, pruned, True, dtype))}
        if E is not None:
            errors["liar"] = n * _trace_form(W_S, E)
    return {mode: max(e, 0.0) / total for mode, e in errors.items()}


def residual_moment(G: torch.Tensor, s: torch.Tensor, n: int, kept: torch.Tensor, pruned: torch.Tensor,
                    Q: torch.Tensor, info: SolveInfo, intercept: bool, dtype: torch.dtype) -> torch.Tensor:
    """E = Σ e eᵀ / N [S, S] of the interpolation residual e = x_S − Q x_R − P.

    A Cholesky solve satisfies Q (C_RR + λI) = C_SR, so E = C_SS − Q C_RS − λ Q Qᵀ (S×S and S×R blocks only);
    an eigh/lstsq fallback does not, and pays for the full C_SS − Q C_RS − C_SR Qᵀ + Q C_RR Qᵀ.
    """
    QC = Q @ moment(G, s, n, kept, pruned, intercept, dtype)  # Q C_RS: [S, S]
    E = moment(G, s, n, pruned, pruned, intercept, dtype)
    if info.fallback is None:
        E -= QC
        E.addmm_(Q, Q.T, alpha=-info.lam)
    else:
        E -= QC + QC.T
        E += Q @ moment(G, s, n, kept, kept, intercept, dtype) @ Q.T
    return (E + E.T) / 2


def _target_moment(cross: CrossStats, b: torch.Tensor | None, cols: torch.Tensor, intercept: bool,
                   dtype: torch.dtype) -> torch.Tensor:
    """Columns `cols` of C_ys = Y/N − μ_y μ_sᵀ, or without intercept (Y − b s_sᵀ)/N (the targets less the bias
    the consumer keeps): [H, len(cols)]."""
    n = cross.n
    block = cross.Y.index_select(1, cols).to(dtype) / n
    mean_s = cross.student.s[cols].to(dtype) / n
    if intercept:
        block -= torch.outer(cross.s_y.to(dtype) / n, mean_s)
    elif b is not None:
        block -= torch.outer(b.to(device=block.device, dtype=dtype), mean_s)
    return block


def sequential_fit(
    cross: CrossStats, W: torch.Tensor, b: torch.Tensor | None, kept: torch.Tensor, alpha: float = 1e-2,
    intercept: bool = True, dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor | None, SolveInfo]:
    """Fit the pruned consumer on student inputs to its targets y (the dense output W x_t + b, or the residual
    target of liar.sequential):

        min ‖y − W' x_s,R − b'‖²,  ridge-damped toward W_R:
        W' = W_R + (C_ys[:, R] − W_R C_ss,RR)(C_ss,RR + λI)⁻¹,   b' = μ_y − W' μ_s,R

    The same `damped_solve` as the dense path; with y = W x + b on the student's own inputs this is exactly the
    dense LIAR solution.
    """
    student = cross.student
    device = student.G.device
    kept = kept.to(device)
    work = torch.float64  # delta = C_ys − W_R C_ss is a difference of close terms: form it in fp64
    A = moment(student.G, student.s, student.n, kept, kept, intercept, work)
    W_R = W.to(device=device, dtype=work).index_select(1, kept)
    delta = _target_moment(cross, b, kept, intercept, work) - W_R @ A
    X, info = damped_solve(A, delta.T, alpha, dtype, overwrite_a=dtype == work)
    weight = W_R + X.T.to(work)
    bias = None if b is None else b.to(device=device, dtype=work)
    if intercept:
        bias = cross.s_y.to(work) / cross.n - weight @ student.mean(work)[kept]
    return weight.to(W.dtype), None if bias is None else bias.to(W.dtype), info


def sequential_error(cross: CrossStats, kept: torch.Tensor, W_new: torch.Tensor, b_new: torch.Tensor | None) -> float:
    """Σ‖y − W' x_s,R − b'‖² / Σ‖y‖² over the calibration tokens (float64 scalars)."""
    student = cross.student
    G, n = student.G, cross.n
    kept = kept.to(G.device)
    f32 = lambda t: None if t is None else t.to(device=G.device, dtype=torch.float32)  # noqa: E731
    Wn, bn = f32(W_new), f32(b_new)
    s_R = student.s.index_select(0, kept)
    H = cross.Y.index_select(1, kept)  # Σ y x_s,Rᵀ
    G_RR = sym_block(G, kept, kept, torch.float32)
    energy = cross.energy - 2 * float((Wn.double() * H.double()).sum()) + _trace_form(Wn, G_RR)
    if bn is not None:
        energy += -2 * float(bn.double() @ cross.s_y.double()) + 2 * float(bn @ (Wn @ s_R)) + n * float(bn @ bn)
    return max(energy, 0.0) / max(cross.energy, 1e-30)
