"""Streamed calibration statistics of one consumer layer's inputs: G = Σ x xᵀ, s = Σ x, n tokens.

Raw fp32 sums plus a token count (never running means), padding masked, normalized only when read.
Accumulation goes through the `liar.ops.gram_update` op, which guarantees the upper triangle of G;
readers symmetrize from it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from liar import ops
from liar.ops.solve import moment


MIRROR_BLOCK = 1024  # rows mirrored per step: bounds the temporary of the in-place symmetrization


@dataclass
class GramStats:
    """Running sums for a D-dimensional input. G: [D, D] fp32 (upper triangle valid), s: [D] fp32."""

    G: torch.Tensor
    s: torch.Tensor
    n: int = 0
    backend: str = "auto"
    symmetric: bool = False  # True once the lower triangle mirrors the upper one

    @classmethod
    def zeros(cls, dim: int, device: torch.device | str = "cpu", backend: str = "auto") -> GramStats:
        return cls(
            G=torch.zeros(dim, dim, dtype=torch.float32, device=device),
            s=torch.zeros(dim, dtype=torch.float32, device=device),
            backend=backend,
        )

    @property
    def dim(self) -> int:
        return self.s.shape[0]

    def update(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        """Add a batch x: [..., D] (any float dtype); mask: [...] bool, True = a real token."""
        x2 = x.reshape(-1, x.shape[-1])
        m = None if mask is None else mask.reshape(-1).to(device=x2.device, dtype=torch.bool)
        self.n += ops.gram_update(self.G, self.s, x2, m, backend=self.backend)
        self.symmetric = False

    def gram(self) -> torch.Tensor:
        """The full symmetric G (fp32), mirrored in place from the upper triangle: no D×D copy."""
        if not self.symmetric:
            G = self.G
            for start in range(0, self.dim, MIRROR_BLOCK):
                rows = slice(start, min(start + MIRROR_BLOCK, self.dim))
                G[rows, :start] = G[:start, rows].T
                diag = G[rows, rows]
                diag.copy_(diag.triu() + diag.triu(1).T)
            self.symmetric = True
        return self.G

    def mean(self, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        return self.s.to(dtype) / self.n

    def moment(self, rows: torch.Tensor, cols: torch.Tensor, intercept: bool = True,
               dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """Block [rows, cols] of C = G/N − μμᵀ (or of G/N without intercept), formed in `dtype` from the upper
        triangle of G (`liar.ops.solve.moment`)."""
        return moment(self.G, self.s, self.n, rows, cols, intercept, dtype)

    def covariance(self, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """The full C = G/N − μμᵀ in `dtype`."""
        every = torch.arange(self.dim, device=self.G.device)
        return self.moment(every, every, True, dtype)

    def sq_norm(self) -> torch.Tensor:
        """Per-channel mean square E[x_j²] = G_jj / N, fp64: [D]."""
        return self.G.diagonal().to(torch.float64) / self.n

    def variance(self) -> torch.Tensor:
        """Per-channel variance E[x_j²] − μ_j², fp64, clamped at 0: [D]."""
        mu = self.mean()
        return (self.sq_norm() - mu * mu).clamp_min(0.0)

    def check_finite(self, where: str) -> None:
        if self.n == 0:
            raise ValueError(f"{where}: no calibration tokens reached this layer (all masked?)")
        if not (torch.isfinite(self.G.diagonal()).all() and torch.isfinite(self.s).all()):
            raise FloatingPointError(
                f"{where}: NaN/Inf in the calibration activations; the model weights or inputs contain "
                "non-finite values (check the checkpoint, or load in float32 with --dtype float32)"
            )

    def merge_(self, other: GramStats) -> GramStats:
        """In-place sum with another partial accumulation of the same stream (e.g. another rank)."""
        self.G += other.G
        self.s += other.s
        self.n += other.n
        self.symmetric = self.symmetric and other.symmetric
        return self


@dataclass
class FoldedStats:
    """One consumer's statistics accumulated in two folds by calibration batch (for choosing the damping by
    cross-validation, liar.damping): batch i goes to fold i % 2, so the two folds sum to the statistics of
    all tokens and cost no extra pass."""

    folds: tuple[GramStats, GramStats]

    @classmethod
    def zeros(cls, dim: int, device: torch.device | str = "cpu", backend: str = "auto") -> FoldedStats:
        return cls((GramStats.zeros(dim, device, backend), GramStats.zeros(dim, device, backend)))

    @property
    def n(self) -> int:
        return self.folds[0].n + self.folds[1].n

    def update(self, x: torch.Tensor, mask: torch.Tensor | None = None, batch: int = 0) -> None:
        self.folds[batch % 2].update(x, mask)

    def total(self) -> GramStats:
        """The statistics of all tokens (a new GramStats: the folds stay)."""
        a, b = self.folds
        return GramStats(G=a.G + b.G, s=a.s + b.s, n=a.n + b.n, backend=a.backend)

    def check_finite(self, where: str) -> None:
        for i, fold in enumerate(self.folds):
            if fold.n == 0:
                raise ValueError(f"{where}: calibration fold {i} is empty; alpha='auto' needs at least two "
                                 "calibration batches (raise --nsamples or lower --batch-size)")
            fold.check_finite(f"{where} (fold {i})")


@dataclass
class CrossStats:
    """Sequential-mode statistics of one consumer: its student inputs x_s (the pruned model's) against the
    targets y it is fitted to (liar.sequential: the dense consumer's output, bias included, or the dense residual
    stream less the student's): the student's own GramStats, Y = Σ y x_sᵀ [H, D] (full), s_y = Σ y [H] and
    energy = Σ‖y‖². Y is H×D, not the D×D teacher–student Gram: the fit only ever reads W G_ts, and H ≤ D
    (down_proj: 576 × 1536 on SmolLM2, 2.7× fewer FLOPs than the square cross-Gram)."""

    student: GramStats
    Y: torch.Tensor
    s_y: torch.Tensor
    energy: float = 0.0

    @classmethod
    def zeros(cls, dim: int, out_dim: int, device: torch.device | str = "cpu", backend: str = "auto") -> CrossStats:
        return cls(student=GramStats.zeros(dim, device, backend),
                   Y=torch.zeros(out_dim, dim, dtype=torch.float32, device=device),
                   s_y=torch.zeros(out_dim, dtype=torch.float32, device=device))

    @property
    def n(self) -> int:
        return self.student.n

    def update(self, x_s: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        """x_s: [..., D] student inputs; y: [..., H] their targets (same tokens, same dtype); mask: [...] bool,
        True = a real token."""
        xs, y2 = x_s.reshape(-1, x_s.shape[-1]), y.reshape(-1, y.shape[-1])
        m = None if mask is None else mask.reshape(-1).to(device=xs.device, dtype=torch.bool)
        s = self.student
        s.n += ops.gram_update_cross(s.G, self.Y, s.s, self.s_y, xs, y2, m, backend=s.backend)
        s.symmetric = False
        real = y2 if m is None else y2[m]
        self.energy += float(torch.linalg.vector_norm(real, dtype=torch.float64)) ** 2

    def blend_(self, other: CrossStats, weight: float) -> CrossStats:
        """In place: (1 − weight) · self + weight · other, every sum alike: the statistics of a least-squares
        fit whose two sets of (input, target) pairs — the same tokens, e.g. the student's and the dense
        model's own — carry those weights."""
        if other.n != self.n:
            raise ValueError(f"blending statistics of {self.n} and {other.n} tokens: they must count the same tokens")
        a, b = self.student, other.student
        for mine, theirs in ((a.G, b.G), (a.s, b.s), (self.Y, other.Y), (self.s_y, other.s_y)):
            mine.mul_(1 - weight).add_(theirs, alpha=weight)
        a.symmetric = a.symmetric and b.symmetric
        self.energy = (1 - weight) * self.energy + weight * other.energy
        return self

    def check_finite(self, where: str) -> None:
        self.student.check_finite(where)
        if not (torch.isfinite(self.s_y).all() and torch.isfinite(self.Y).all()):
            raise FloatingPointError(f"{where}: NaN/Inf in the dense (teacher) targets")
