"""The damping α of a consumer's LIAR solve chosen by 2-fold cross-validation on its calibration tokens.

The calibration batches fall into two folds (liar.stats.FoldedStats, one pass). For each α of a grid, the
interpolation is solved on one fold (`interpolation`: Q, P) and scored on the other: the consumer's output error
there is W_S e with e = x_S − Q x_R − P, so with the other fold's moments (C, μ, N)

    Σ‖W x + b − W_R' x_R − b'‖² = N · [ tr(W_S C_SS W_Sᵀ) − 2 tr(Z C_RS W_Sᵀ) + tr(Z C_RR Zᵀ) + ‖W_S m‖² ],
    Z = W_S Q,   m = μ_S − Q μ_R − P   (the mean the fold's own intercept misses)

(the no-intercept variant: uncentered moments G/N in place of C, P = 0 and m = 0). Both directions are summed
and the α with the smallest held-out error wins; the caller then solves on all tokens with it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from liar.ops.solve import interpolation, moment
from liar.reconstruct import output_energy
from liar.stats import GramStats

GRID = tuple(10.0 ** (k / 2) for k in range(-8, 1))  # 1e-4 … 1 in half-decades


@dataclass(frozen=True)
class AlphaChoice:
    """The chosen α and, for every α of the grid, the held-out error relative to the held-out output energy."""

    alpha: float
    heldout: dict[float, float]


@dataclass(frozen=True)
class _TestFold:
    """What the error form needs of the fold a solve is scored on, for a consumer's pruned columns W_S:
    tr(W_S C_SS W_Sᵀ), H = C_RS W_Sᵀ [R, d_out], C_RR, the means μ_R, μ_S (None without intercept) and N."""

    slicing: float
    H: torch.Tensor
    RR: torch.Tensor
    mean_R: torch.Tensor | None
    mean_S: torch.Tensor | None
    n: int

    @classmethod
    def of(cls, stats: GramStats, W_S: torch.Tensor, kept: torch.Tensor, pruned: torch.Tensor, intercept: bool,
           dtype: torch.dtype) -> _TestFold:
        block = lambda rows, cols: moment(stats.G, stats.s, stats.n, rows, cols, intercept, dtype)  # noqa: E731
        mean = stats.mean(dtype) if intercept else None
        return cls(float(((W_S @ block(pruned, pruned)) * W_S).sum()), block(kept, pruned) @ W_S.T,
                   block(kept, kept), None if mean is None else mean[kept], None if mean is None else mean[pruned],
                   stats.n)


def heldout_error(test: _TestFold, W_S: torch.Tensor, Q: torch.Tensor, P: torch.Tensor) -> float:
    """Σ over the test fold's tokens of ‖W_S (x_S − Q x_R − P)‖² (module note); W_S: [d_out, S], Q: [S, R]."""
    Z = W_S @ Q
    error = test.slicing - 2.0 * float((Z * test.H.T).sum()) + float(((Z @ test.RR) * Z).sum())
    if test.mean_S is not None:
        error += float((W_S @ (test.mean_S - Q @ test.mean_R - P)).square().sum())
    return test.n * max(error, 0.0)


def choose_alpha(folds: tuple[GramStats, GramStats], W: torch.Tensor, b: torch.Tensor | None, kept: torch.Tensor,
                 pruned: torch.Tensor, intercept: bool = True, dtype: torch.dtype = torch.float32,
                 grid: tuple[float, ...] = GRID) -> AlphaChoice:
    """The α of `grid` whose solve on one fold reconstructs the consumer y = W x + b best on the other, summed over
    both directions. kept, pruned: the input channels R and S; dtype: of the solves and error forms."""
    device = folds[0].G.device
    kept, pruned = kept.to(device), pruned.to(device)
    W_S = W.to(device=device, dtype=dtype).index_select(1, pruned)
    tests = [_TestFold.of(f, W_S, kept, pruned, intercept, dtype) for f in folds]
    errors = dict.fromkeys(grid, 0.0)
    for train, test in ((folds[0], tests[1]), (folds[1], tests[0])):
        for alpha in grid:
            Q, P, _ = interpolation(train.G, train.s, train.n, kept, pruned, alpha, intercept, dtype)
            errors[alpha] += heldout_error(test, W_S, Q, P)
    energy = sum(output_energy(f.G, f.s, f.n, W, b, dtype) for f in folds)
    heldout = {alpha: e / max(energy, 1e-30) for alpha, e in errors.items()}
    return AlphaChoice(min(heldout, key=heldout.get), heldout)
