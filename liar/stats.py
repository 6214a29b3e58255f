"""Streamed calibration statistics of one consumer layer's inputs: G = Σ x xᵀ, s = Σ x, n tokens.

Raw fp32 sums plus a token count (never running means), padding masked, normalized only when read.
Accumulation goes through the `liar.ops.gram_update` op, which guarantees the upper triangle of G;
readers symmetrize from it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from liar import ops


@dataclass
class GramStats:
    """Running sums for a D-dimensional input. G: [D, D] fp32 (upper triangle valid), s: [D] fp32."""

    G: torch.Tensor
    s: torch.Tensor
    n: int = 0
    backend: str = "auto"

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

    def gram(self, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """The full symmetric G, read from its upper triangle."""
        upper = self.G.to(dtype).triu()
        return upper + upper.triu(1).T

    def mean(self, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        return self.s.to(dtype) / self.n

    def covariance(self, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """C = G/N − μμᵀ, formed in `dtype` (fp64 by default: the subtraction is where precision is lost)."""
        mu = self.mean(dtype)
        return self.gram(dtype) / self.n - torch.outer(mu, mu)

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
        return self


@dataclass
class CrossStats:
    """Sequential-mode statistics of one consumer: student inputs x_s (pruned model) against teacher inputs
    x_t (dense model). G_ss: [D, D] upper triangle valid, G_ts: [D, D] full, s_s, s_t: [D], n tokens, and
    target_energy = Σ‖W x_t + b‖², the dense consumer output energy (measured on its output)."""

    G_ss: torch.Tensor
    G_ts: torch.Tensor
    s_s: torch.Tensor
    s_t: torch.Tensor
    n: int = 0
    target_energy: float = 0.0
    backend: str = "auto"

    @classmethod
    def zeros(cls, dim: int, device: torch.device | str = "cpu", backend: str = "auto") -> CrossStats:
        z = lambda *shape: torch.zeros(*shape, dtype=torch.float32, device=device)  # noqa: E731
        return cls(G_ss=z(dim, dim), G_ts=z(dim, dim), s_s=z(dim), s_t=z(dim), backend=backend)

    def update(self, x_s: torch.Tensor, x_t: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        """x_s, x_t: [..., D] of the same tokens; mask: [...] bool, True = a real token."""
        xs, xt = x_s.reshape(-1, x_s.shape[-1]), x_t.reshape(-1, x_t.shape[-1])
        m = None if mask is None else mask.reshape(-1).to(device=xs.device, dtype=torch.bool)
        self.n += ops.gram_update_cross(self.G_ss, self.G_ts, self.s_s, self.s_t, xs, xt, m, backend=self.backend)

    def add_target(self, y_t: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        y = y_t.reshape(-1, y_t.shape[-1]).to(torch.float64)
        if mask is not None:
            y = y[mask.reshape(-1).to(device=y.device, dtype=torch.bool)]
        self.target_energy += float(y.square().sum())

    @property
    def student(self) -> GramStats:
        """The student's own moments (what criteria and the dense formulas read)."""
        return GramStats(G=self.G_ss, s=self.s_s, n=self.n, backend=self.backend)

    def cross(self, intercept: bool, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """C_ts = G_ts/N − μ_t μ_sᵀ (or G_ts/N without intercept): [D_t, D_s]."""
        moment = self.G_ts.to(dtype) / self.n
        if intercept:
            moment = moment - torch.outer(self.s_t.to(dtype), self.s_s.to(dtype)) / self.n**2
        return moment

    def check_finite(self, where: str) -> None:
        self.student.check_finite(where)
        if not (torch.isfinite(self.s_t).all() and torch.isfinite(self.G_ts).all()):
            raise FloatingPointError(f"{where}: NaN/Inf in the dense (teacher) activations")
