"""LIAR reconstruction as pure functions over explicit statistics (DESIGN.md §1).

One consumer layer y = W x + b, W: [d_out, D]; kept input channels R, pruned S.

    Q = C_SR (C_RR + λI)⁻¹,   λ = α · mean(diag C_RR)
    P = μ_S − Q μ_R
    W_R' = W_R + W_S Q,       b' = b + W_S P

`Q = 0, P = μ_S` is FLAP's bias compensation ("bias"); `Q = 0, P = 0` is plain slicing ("none").
The no-intercept variant uses the uncentered second moment G/N in place of C and P = 0.

Worked example (D = 3, keep channels 0 and 2, channel 1 is a copy of channel 0):
    x = [[1, 1, 5], [2, 2, 3], [3, 3, 4]]  → Q ≈ [[1, 0]] (α → 0), so W_R' = W_R + W_S·[1, 0]:
    the pruned column is added onto column 0 and the output is unchanged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from liar.stats import CrossStats, GramStats

log = logging.getLogger(__name__)

MAX_ESCALATIONS = 8
ESCALATION_FACTOR = 10.0
FALLBACK_CODES = {None: 0, "eigh": 1, "lstsq": 2}


@dataclass(frozen=True)
class SolveInfo:
    """How one damped system was solved: the λ used, escalations of λ, and the fallback taken (if any)."""

    lam: float
    escalations: int = 0
    fallback: str | None = None

    def to_tensor(self) -> torch.Tensor:
        return torch.tensor([self.lam, self.escalations, FALLBACK_CODES[self.fallback]], dtype=torch.float64)

    @classmethod
    def from_tensor(cls, t: torch.Tensor) -> SolveInfo:
        lam, esc, code = t.tolist()
        fallback = {v: k for k, v in FALLBACK_CODES.items()}[int(code)]
        return cls(lam=lam, escalations=int(esc), fallback=fallback)


@dataclass
class Interpolation:
    """Q: [S, R] and P: [S] in the solve dtype, with how they were solved."""

    Q: torch.Tensor
    P: torch.Tensor
    info: SolveInfo


@dataclass
class Reconstruction:
    """A consumer's new weight [d_out, R] and bias [d_out] (None = no bias), plus what produced them."""

    weight: torch.Tensor
    bias: torch.Tensor | None
    info: SolveInfo | None = None
    errors: dict[str, float] = field(default_factory=dict)


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
    A: torch.Tensor, B: torch.Tensor, alpha: float, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, SolveInfo]:
    """X = (A + λI)⁻¹ B with λ = alpha · mean(diag A); A: [R, R] symmetric PSD, B: [R, S] → X: [R, S].

    Cholesky (`cholesky_ex`, no exceptions) in `dtype`; on failure λ grows ×10 up to 8 times, then a float64
    eigh solve. Never silent: the returned SolveInfo says what happened.
    """
    if not (torch.isfinite(A).all() and torch.isfinite(B).all()):
        raise FloatingPointError("non-finite statistics reached the solver; check the calibration activations")
    A, B = A.to(dtype), B.to(dtype)
    scale = float(A.diagonal().mean()) if A.numel() else 0.0
    lam = alpha * scale
    floor = max(scale, 1e-12) * 1e-6
    eye = torch.eye(A.shape[0], dtype=dtype, device=A.device)
    for escalation in range(MAX_ESCALATIONS + 1):
        L, info = torch.linalg.cholesky_ex(A + lam * eye)
        if int(info) == 0:
            X = torch.cholesky_solve(B, L)
            if torch.isfinite(X).all():
                if escalation:
                    log.warning("Cholesky needed λ raised %d× to %.3g", escalation, lam)
                return X, SolveInfo(lam=lam, escalations=escalation)
        lam = max(lam * ESCALATION_FACTOR, floor)
    lam0 = max(alpha * scale, floor)
    X, how = _fallback_solve(A, B, lam0)
    log.warning("Cholesky failed after %d escalations; solved by %s with λ=%.3g", MAX_ESCALATIONS, how, lam0)
    return X.to(dtype), SolveInfo(lam=lam0, escalations=MAX_ESCALATIONS, fallback=how)


def _sub(M: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    return M.index_select(0, rows).index_select(1, cols)


def interpolation(
    stats: GramStats,
    kept: torch.Tensor,
    pruned: torch.Tensor,
    alpha: float = 1e-2,
    intercept: bool = True,
    dtype: torch.dtype = torch.float32,
) -> Interpolation:
    """Q = C_SR (C_RR + λI)⁻¹ and P = μ_S − Q μ_R (P = 0 and uncentered moments without intercept)."""
    moment = stats.covariance() if intercept else stats.gram() / stats.n
    kept, pruned = kept.to(moment.device), pruned.to(moment.device)
    Qt, info = damped_solve(_sub(moment, kept, kept), _sub(moment, kept, pruned), alpha, dtype)
    Q = Qt.T
    if intercept:
        mu = stats.mean(dtype)
        P = mu[pruned] - Q @ mu[kept]
    else:
        P = torch.zeros(pruned.numel(), dtype=dtype, device=Q.device)
    return Interpolation(Q=Q, P=P, info=info)


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


def residual_energy(
    stats: GramStats, W: torch.Tensor, kept: torch.Tensor, pruned: torch.Tensor,
    Q: torch.Tensor | None, P: torch.Tensor | None,
) -> float:
    """Σ_t ‖W_S (x_S − Q x_R − P)‖² over the calibration tokens, from the statistics alone (float64)."""
    G, s, n = stats.gram(), stats.s.double(), stats.n
    kept, pruned = kept.to(G.device), pruned.to(G.device)
    W_S = W.index_select(1, pruned.to(W.device)).to(device=G.device, dtype=torch.float64)
    M = _sub(G, pruned, pruned)
    r_sum = s[pruned]
    if Q is not None:
        Q64 = Q.to(device=G.device, dtype=torch.float64)
        G_SR = _sub(G, pruned, kept)
        M = M - Q64 @ G_SR.T - G_SR @ Q64.T + Q64 @ _sub(G, kept, kept) @ Q64.T
        r_sum = r_sum - Q64 @ s[kept]
    if P is not None:
        P64 = P.to(device=G.device, dtype=torch.float64)
        M = M - torch.outer(r_sum, P64) - torch.outer(P64, r_sum) + n * torch.outer(P64, P64)
    return float(((W_S @ M) * W_S).sum())


def output_energy(stats: GramStats, W: torch.Tensor, b: torch.Tensor | None) -> float:
    """Σ_t ‖W x_t + b‖² of the dense layer over the calibration tokens (float64)."""
    G = stats.gram()
    W64 = W.to(device=G.device, dtype=torch.float64)
    energy = float(((W64 @ G) * W64).sum())
    if b is not None:
        b64 = b.to(device=G.device, dtype=torch.float64)
        energy += 2.0 * float(b64 @ (W64 @ stats.s.double())) + stats.n * float(b64 @ b64)
    return energy


def relative_errors(
    stats: GramStats, W: torch.Tensor, b: torch.Tensor | None, kept: torch.Tensor, pruned: torch.Tensor,
    liar: Interpolation,
) -> dict[str, float]:
    """Relative output error ‖Y − Y'‖² / ‖Y‖² on the calibration data for none, bias and liar."""
    total = max(output_energy(stats, W, b), 1e-30)
    mu_S = stats.mean().index_select(0, pruned.to(stats.s.device))
    return {
        "none": residual_energy(stats, W, kept, pruned, None, None) / total,
        "bias": residual_energy(stats, W, kept, pruned, None, mu_S) / total,
        "liar": residual_energy(stats, W, kept, pruned, liar.Q, liar.P) / total,
    }


def sequential_fit(
    cross: CrossStats, W: torch.Tensor, b: torch.Tensor | None, kept: torch.Tensor, alpha: float = 1e-2,
    intercept: bool = True, dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor | None, SolveInfo]:
    """Fit the pruned consumer on student inputs to the dense output on teacher inputs:

        min ‖W x_t + b − W' x_s,R − b'‖²,  ridge-damped toward W_R:
        W' = W_R + (W C_ts[:, R] − W_R C_ss,RR)(C_ss,RR + λI)⁻¹,   b' = b + W μ_t − W' μ_s,R

    With identical teacher and student inputs this is exactly the dense LIAR solution.
    """
    student = cross.student
    moment = student.covariance() if intercept else student.gram() / cross.n
    kept = kept.to(moment.device)
    A = _sub(moment, kept, kept)
    W64 = W.to(device=moment.device, dtype=torch.float64)
    W_R = W64.index_select(1, kept)
    delta = W64 @ cross.cross(intercept).index_select(1, kept) - W_R @ A
    X, info = damped_solve(A, delta.T, alpha, dtype)
    weight = W_R + X.T.to(torch.float64)
    bias = None if b is None else b.to(device=moment.device, dtype=torch.float64)
    if intercept:
        shift = W64 @ cross.s_t.double() / cross.n - weight @ student.mean().index_select(0, kept)
        bias = shift if bias is None else bias + shift
    return weight.to(W.dtype), None if bias is None else bias.to(W.dtype), info


def sequential_error(
    cross: CrossStats, W: torch.Tensor, b: torch.Tensor | None, kept: torch.Tensor,
    W_new: torch.Tensor, b_new: torch.Tensor | None,
) -> float:
    """Σ‖W x_t + b − W' x_s,R − b'‖² / Σ‖W x_t + b‖² over the calibration tokens (float64)."""
    G, n = cross.student.gram(), cross.n
    kept = kept.to(G.device)
    f64 = lambda t: None if t is None else t.to(device=G.device, dtype=torch.float64)  # noqa: E731
    W64, b64, Wn, bn = f64(W), f64(b), f64(W_new), f64(b_new)
    s_R = cross.s_s.double().index_select(0, kept)
    H = W64 @ cross.G_ts.double().index_select(1, kept)  # Σ y_t x_s,Rᵀ without the bias part
    h = W64 @ cross.s_t.double()  # Σ y_t without the bias part
    if b64 is not None:
        H, h = H + torch.outer(b64, s_R), h + n * b64
    energy = cross.target_energy - 2 * float((Wn * H).sum()) + float(((Wn @ _sub(G, kept, kept)) * Wn).sum())
    if bn is not None:
        energy += -2 * float(bn @ h) + 2 * float(bn @ (Wn @ s_R)) + n * float(bn @ bn)
    return max(energy, 0.0) / max(cross.target_energy, 1e-30)
