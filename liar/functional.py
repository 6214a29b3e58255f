"""LIAR as a drop-in reconstruction backend: statistics in, kept channels in, new weight and bias out.

For compression tools with their own criteria and masks:

    from liar.functional import GramStats, reconstruct
    stats = GramStats.zeros(D)
    for x in consumer_inputs:            # [tokens, D], any float dtype
        stats.update(x)                  # optional mask: [tokens] bool, True = real token
    r = reconstruct(stats, W, b, kept)   # kept: LongTensor of input channels to keep
    new_linear.weight, new_linear.bias = r.weight, r.bias    # [d_out, len(kept)], [d_out] or None
    r.errors  # relative output error on the calibration data for none / bias / liar
    r.info    # λ used, escalations, fallback
"""

from __future__ import annotations

import torch

from liar import ops
from liar.ops.solve import SolveInfo, fold
from liar.reconstruct import Reconstruction, relative_errors, sequential_error, sequential_fit
from liar.stats import CrossStats, GramStats
from liar.structure import complement


def _checked(kept, D: int, mode: str) -> torch.Tensor:
    if mode not in ("liar", "bias", "none"):
        raise ValueError(f"mode={mode!r}; choose liar, bias or none")
    kept = torch.as_tensor(kept, dtype=torch.long).cpu().unique()
    if kept.numel() == 0 or int(kept[-1]) >= D or int(kept[0]) < 0:
        raise ValueError(f"kept must be 1..{D} distinct channel indices in [0, {D}); got {kept.tolist()[:8]}")
    return kept


def reconstruct(
    stats: GramStats,
    W: torch.Tensor,
    b: torch.Tensor | None,
    kept: torch.Tensor,
    mode: str = "liar",
    alpha: float = 1e-2,
    intercept: bool = True,
    solve_dtype: torch.dtype = torch.float32,
    backend: str = "auto",
) -> Reconstruction:
    """Reconstruct consumer y = W x + b (W: [d_out, D]) keeping input channels `kept` ([R] int64).

    mode: "liar" (least-squares interpolation), "bias" (FLAP mean compensation) or "none" (slicing).
    intercept=False gives the bias-free variant (Q from uncentered moments, P = 0): with b None the
    result has no bias either. Errors: none and bias always (they cost an S×S block); liar's when it is
    solved (mode="liar"): "none" and "bias" run no solve at all.
    """
    kept = _checked(kept, W.shape[1], mode)
    pruned = complement(kept, W.shape[1])
    device = stats.G.device
    kept_d, pruned_d = kept.to(device), pruned.to(device)
    dtype = torch.float64 if solve_dtype == torch.float64 else torch.float32
    if mode == "liar":
        weight, bias, Q, _, info = ops.liar_solve(
            stats.G, stats.s, stats.n, W, b, kept_d, pruned_d, alpha=alpha, intercept=intercept,
            solve_fp64=dtype == torch.float64, backend=backend,
        )
        errors = relative_errors(stats, W, b, kept_d, pruned_d, (Q, info), intercept, dtype)
        return Reconstruction(weight, bias, info, errors)
    errors = relative_errors(stats, W, b, kept_d, pruned_d, None, intercept, dtype)
    P0 = stats.mean(torch.float32).index_select(0, pruned_d) if mode == "bias" else None
    weight, bias = fold(W, b, kept, pruned, None, P0)
    return Reconstruction(weight, bias, None, errors)


def reconstruct_sequential(
    cross: CrossStats,
    W: torch.Tensor,
    b: torch.Tensor | None,
    kept: torch.Tensor,
    mode: str = "liar",
    alpha: float = 1e-2,
    intercept: bool = True,
    solve_dtype: torch.dtype = torch.float32,
) -> Reconstruction:
    """Sequential mode: fit the consumer on student inputs to its targets (`CrossStats`: the dense output on
    teacher inputs, or liar.sequential's residual target).

    none keeps W_R and b; bias matches the mean output (b' = μ_y − W_R μ_s,R); liar is the damped
    least-squares fit `sequential_fit`. Errors are relative to the targets' energy.
    """
    kept = _checked(kept, W.shape[1], mode).to(W.device)
    W_R = W.index_select(1, kept)
    mean_y = cross.s_y.double().to(W.device) / cross.n
    mean_s = cross.student.mean().to(W.device).index_select(0, kept)
    candidates = {
        "none": (W_R, b, None),
        "bias": (W_R, (mean_y - W_R.double() @ mean_s).to(W.dtype), None),
    }
    if mode == "liar":  # none and bias run no solve
        candidates["liar"] = sequential_fit(cross, W, b, kept, alpha, intercept, solve_dtype)
    errors = {m: sequential_error(cross, kept, w, bb) for m, (w, bb, _) in candidates.items()}
    weight, bias, info = candidates[mode]
    return Reconstruction(weight, bias, info, errors)


__all__ = ["CrossStats", "GramStats", "Reconstruction", "SolveInfo", "reconstruct", "reconstruct_sequential"]
