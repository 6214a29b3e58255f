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
    A: torch.Tensor, B: torch.Tensor, alpha: float, dtype: torch.dtype = torch.float32, overwrite_a: bool = False,
) -> tuple[torch.Tensor, SolveInfo]:
    """X = (A + λI)⁻¹ B with λ = alpha · mean(diag A); A: [R, R] symmetric PSD, B: [R, S] → X: [R, S].

    Cholesky (`cholesky_ex`, no exceptions) in `dtype`; on failure λ grows ×10 up to 8 times, then a float64
    eigh solve. Never silent: the returned SolveInfo says what happened. The damping is added in place to A
    (to a copy unless `overwrite_a` and A is already in `dtype`), so the solve holds two R×R matrices.
    """
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
    stats: GramStats,
    kept: torch.Tensor,
    pruned: torch.Tensor,
    alpha: float = 1e-2,
    intercept: bool = True,
    dtype: torch.dtype = torch.float32,
) -> Interpolation:
    """Q = C_SR (C_RR + λI)⁻¹ and P = μ_S − Q μ_R (P = 0 and uncentered moments without intercept)."""
    A = stats.moment(kept, kept, intercept, dtype)
    Qt, info = damped_solve(A, stats.moment(kept, pruned, intercept, dtype), alpha, dtype, overwrite_a=True)
    Q = Qt.T
    if intercept:
        mu = stats.mean(dtype)
        P = mu[pruned.to(mu.device)] - Q @ mu[kept.to(mu.device)]
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


def output_error(stats: GramStats, dW: torch.Tensor, db: torch.Tensor | None, dtype: torch.dtype,
                 cols: torch.Tensor | None = None) -> float:
    """Σ_t ‖dW x_t + db‖² over the calibration tokens, from (G, s, N): tr(dW G dWᵀ) + 2 dbᵀ dW s + N‖db‖².

    dW: [d_out, D] in `dtype`, or [d_out, len(cols)] when it is zero outside the input channels `cols`
    (then only that block of G is read). A quadratic form in the PSD G, evaluated directly (no difference
    of large terms), so the solve dtype suffices.
    """
    G, s = stats.gram(), stats.s
    if cols is not None:
        G, s = G[cols[:, None], cols], s[cols]
    energy = float(((dW @ G.to(dtype)) * dW).sum())
    if db is not None:
        energy += 2.0 * float(db @ (dW @ s.to(dtype))) + stats.n * float(db @ db)
    return max(energy, 0.0)


def relative_errors(
    stats: GramStats, W: torch.Tensor, b: torch.Tensor | None, kept: torch.Tensor, pruned: torch.Tensor,
    liar: Interpolation,
) -> dict[str, float]:
    """Relative output error ‖Y − Y'‖² / ‖Y‖² on the calibration data for none, bias and liar.

    The output differences are W_S x_S (none), W_S (x_S − μ_S) (bias), W_S (x_S − Q x_R − P) (liar): each is
    one weight difference dW and bias difference db in a quadratic form; none and bias touch only G_SS.
    """
    dtype = liar.Q.dtype
    device = stats.G.device
    kept, pruned = kept.to(device), pruned.to(device)
    Wd = W.to(device=device, dtype=dtype)
    W_S = Wd.index_select(1, pruned)
    total = max(output_error(stats, Wd, None if b is None else b.to(device=device, dtype=dtype), dtype), 1e-30)
    errors = {"none": output_error(stats, W_S, None, dtype, cols=pruned),
              "bias": output_error(stats, W_S, -(W_S @ stats.mean(dtype)[pruned]), dtype, cols=pruned)}
    dW = torch.empty_like(Wd)
    dW[:, pruned] = W_S
    dW[:, kept] = -(W_S @ liar.Q.to(device))
    errors["liar"] = output_error(stats, dW, -(W_S @ liar.P.to(device)), dtype)
    return {mode: e / total for mode, e in errors.items()}


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
    device = student.G.device
    kept = kept.to(device)
    work = torch.float64  # delta = W C_ts − W_R C_ss is a difference of close terms: form it in fp64
    A = student.moment(kept, kept, intercept, work)
    Wd = W.to(device=device, dtype=work)
    W_R = Wd.index_select(1, kept)
    delta = Wd @ cross.cross(kept, intercept, work) - W_R @ A
    X, info = damped_solve(A, delta.T, alpha, dtype)
    weight = W_R + X.T.to(work)
    bias = None if b is None else b.to(device=device, dtype=work)
    if intercept:
        shift = Wd @ (cross.s_t.to(work) / cross.n) - weight @ student.mean(work)[kept]
        bias = shift if bias is None else bias + shift
    return weight.to(W.dtype), None if bias is None else bias.to(W.dtype), info


def sequential_error(
    cross: CrossStats, W: torch.Tensor, b: torch.Tensor | None, kept: torch.Tensor,
    W_new: torch.Tensor, b_new: torch.Tensor | None,
) -> float:
    """Σ‖W x_t + b − W' x_s,R − b'‖² / Σ‖W x_t + b‖² over the calibration tokens (float64 scalars)."""
    student = cross.student
    G, n = student.gram(), cross.n
    kept = kept.to(G.device)
    f32 = lambda t: None if t is None else t.to(device=G.device, dtype=torch.float32)  # noqa: E731
    W32, b32, Wn, bn = f32(W), f32(b), f32(W_new), f32(b_new)
    s_R = student.s.index_select(0, kept)
    H = W32 @ cross.G_ts.index_select(1, kept)  # Σ y_t x_s,Rᵀ without the bias part
    h = W32 @ cross.s_t  # Σ y_t without the bias part
    if b32 is not None:
        H, h = H + torch.outer(b32, s_R), h + n * b32
    G_RR = G.index_select(0, kept).index_select(1, kept)
    energy = cross.target_energy - 2 * float((Wn.double() * H.double()).sum()) + float(((Wn @ G_RR) * Wn).sum())
    if bn is not None:
        energy += -2 * float(bn.double() @ h.double()) + 2 * float(bn @ (Wn @ s_R)) + n * float(bn @ bn)
    return max(energy, 0.0) / max(cross.target_energy, 1e-30)
