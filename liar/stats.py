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
