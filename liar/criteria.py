"""Channel-importance criteria, computed from a consumer's weight and its input statistics alone.

Each criterion maps (W: [d_out, D], stats) to one score per input channel ([D], float64, higher = keep).
They need only diag(G), s and N, so scoring costs no extra pass and no gradients. Heads and KV groups
are scored by the mean of their channels' scores (`unit_scores`).

Register a new one with `@register("name")`; the CLI and PruneConfig pick it up by name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from liar.stats import GramStats

Criterion = Callable[["torch.Tensor", "GramStats", "torch.Generator"], torch.Tensor]
CRITERIA: dict[str, Criterion] = {}


def register(name: str) -> Callable[[Criterion], Criterion]:
    def deco(fn: Criterion) -> Criterion:
        CRITERIA[name] = fn
        return fn

    return deco


def _col_sq_norm(W: torch.Tensor) -> torch.Tensor:
    return W.to(torch.float64).square().sum(dim=0).cpu()


@register("magnitude")
def magnitude(W: torch.Tensor, stats: GramStats, gen: torch.Generator) -> torch.Tensor:
    """‖W[:, j]‖₂: the weight the consumer puts on channel j."""
    return _col_sq_norm(W).sqrt()


@register("wanda")
def wanda(W: torch.Tensor, stats: GramStats, gen: torch.Generator) -> torch.Tensor:
    """Wanda-sp: Σ_i |W_ij| · ‖x_j‖, with ‖x_j‖ the per-token RMS of channel j."""
    return W.to(torch.float64).abs().sum(dim=0).cpu() * stats.sq_norm().sqrt().cpu()


@register("flap")
def flap(W: torch.Tensor, stats: GramStats, gen: torch.Generator) -> torch.Tensor:
    """FLAP fluctuation (WIFV): var(x_j) · ‖W[:, j]‖²."""
    return stats.variance().cpu() * _col_sq_norm(W)


@register("random")
def random(W: torch.Tensor, stats: GramStats, gen: torch.Generator) -> torch.Tensor:
    """Uniform random scores from the run's seeded generator (a baseline)."""
    return torch.rand(W.shape[1], generator=gen, dtype=torch.float64)


def channel_scores(name: str, W: torch.Tensor, stats: GramStats, gen: torch.Generator) -> torch.Tensor:
    if name not in CRITERIA:
        raise ValueError(f"unknown criterion {name!r}; registered: {', '.join(CRITERIA)}")
    scores = CRITERIA[name](W, stats, gen)
    if scores.shape != (W.shape[1],) or not torch.isfinite(scores).all():
        raise FloatingPointError(f"criterion {name!r} gave non-finite or misshapen scores")
    return scores


def unit_scores(channel: torch.Tensor, unit_size: int) -> torch.Tensor:
    """Mean channel score of each contiguous block of `unit_size` channels (a head: unit_size = head_dim)."""
    return channel.reshape(-1, unit_size).mean(dim=1)
