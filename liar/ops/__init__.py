"""liar.ops: the fused operations behind the pipeline, usable on their own as a library.

    gram_update(G, s, x, mask=None, backend="auto") -> int
    gram_update_cross(G_ss, G_ts, s_s, s_t, x_s, x_t, mask=None, backend="auto") -> int
    liar_solve(G, s, n, W, b, kept, pruned, alpha=1e-2, intercept=True, solve_fp64=False, backend="auto")

`backend` ∈ {auto, torch, cpp, triton, cuda}. `auto` picks the fastest available kernel for the tensors'
device; `last_backend(op)` tells which one served the latest call (the run report records it).
A named backend that has no kernel for an op (cpp has no liar_solve) hands that op to the torch reference,
and `last_backend` says so.
"""

from __future__ import annotations

import torch

from liar.ops import library  # noqa: F401  (registers the torch.library schemas)
from liar.ops.backends import BACKENDS, available, resolve

_LAST: dict[str, str] = {}


def last_backend(op: str) -> str | None:
    return _LAST.get(op)


def _call(op: str, backend: str, device: torch.device, args: tuple):
    """`auto` goes through the torch.library op (the dispatcher picks the device kernel); a named backend
    calls that backend's kernel directly. Either way the name that served is recorded."""
    name = resolve(op, backend, device)
    _LAST[op] = name
    if backend == "auto":
        return getattr(torch.ops.liar, op)(*args)
    return BACKENDS[name].kernels[op](*args)


def _rows(x: torch.Tensor, mask: torch.Tensor | None) -> int:
    return x.shape[0] if mask is None else int(mask.sum())


def _check_gram_args(G: torch.Tensor, s: torch.Tensor, x: torch.Tensor, mask: torch.Tensor | None,
                     names: tuple[str, str, str] = ("G", "s", "x")) -> None:
    nG, ns, nx = names
    D = x.shape[-1] if x.dim() else -1
    if G.dtype != torch.float32 or s.dtype != torch.float32:
        raise TypeError(f"{nG} and {ns} must be float32 accumulators (got {G.dtype}, {s.dtype})")
    if x.dim() != 2:
        raise ValueError(f"{nx} must be [tokens, D]; got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{nx} must be a floating tensor; got {x.dtype}")
    if G.shape != (D, D) or s.shape != (D,):
        raise ValueError(f"{nG} must be [{D}, {D}] and {ns} [{D}] for {nx} [tokens, {D}]; "
                         f"got {nG} {tuple(G.shape)}, {ns} {tuple(s.shape)}")
    if mask is not None and (mask.shape != (x.shape[0],) or mask.dtype != torch.bool):
        raise ValueError(f"mask must be bool [{x.shape[0]}]; got {mask.dtype} {tuple(mask.shape)}")
    if len({G.device, s.device, x.device} | ({mask.device} if mask is not None else set())) != 1:
        raise ValueError(f"{nG}, {ns}, {nx} and mask must be on one device")


def gram_update(
    G: torch.Tensor, s: torch.Tensor, x: torch.Tensor, mask: torch.Tensor | None = None, backend: str = "auto"
) -> int:
    """G += xᵀx (upper triangle guaranteed; read it symmetrized), s += Σx over rows kept by mask; returns rows."""
    _check_gram_args(G, s, x, mask)
    _call("gram_update", backend, x.device, (G, s, x, mask))
    return _rows(x, mask)


def gram_update_cross(
    G_ss: torch.Tensor, G_ts: torch.Tensor, s_s: torch.Tensor, s_t: torch.Tensor,
    x_s: torch.Tensor, x_t: torch.Tensor, mask: torch.Tensor | None = None, backend: str = "auto",
) -> int:
    """One pass over student x_s [T, D_s] and teacher x_t [T, D_t] rows kept by mask; returns rows.

    G_ss [D_s, D_s] += x_sᵀx_s (upper triangle guaranteed), G_ts [D_t, D_s] += x_tᵀx_s (full),
    s_s += Σ x_s, s_t += Σ x_t — all fp32 accumulators. The sequential calibration mode fits the pruned
    model's inputs (student) to the dense model's (teacher).
    """
    _check_gram_args(G_ss, s_s, x_s, mask, ("G_ss", "s_s", "x_s"))
    if x_t.dim() != 2 or x_t.shape[0] != x_s.shape[0] or x_t.dtype != x_s.dtype:
        raise ValueError(f"x_t must be [{x_s.shape[0]}, D_t] of dtype {x_s.dtype} like x_s; "
                         f"got {x_t.dtype} {tuple(x_t.shape)}")
    D_t, D_s = x_t.shape[1], x_s.shape[1]
    if G_ts.dtype != torch.float32 or s_t.dtype != torch.float32:
        raise TypeError(f"G_ts and s_t must be float32 accumulators (got {G_ts.dtype}, {s_t.dtype})")
    if G_ts.shape != (D_t, D_s) or s_t.shape != (D_t,):
        raise ValueError(f"G_ts must be [{D_t}, {D_s}] and s_t [{D_t}]; got {tuple(G_ts.shape)}, {tuple(s_t.shape)}")
    if len({G_ts.device, s_t.device, x_t.device, x_s.device}) != 1:
        raise ValueError("G_ts, s_t, x_t and x_s must be on one device")
    _call("gram_update_cross", backend, x_s.device, (G_ss, G_ts, s_s, s_t, x_s, x_t, mask))
    return _rows(x_s, mask)


def liar_solve(
    G: torch.Tensor, s: torch.Tensor, n: int, W: torch.Tensor, b: torch.Tensor | None,
    kept: torch.Tensor, pruned: torch.Tensor, alpha: float = 1e-2, intercept: bool = True,
    solve_fp64: bool = False, backend: str = "auto",
):
    """LIAR solve: returns (W_R' [d_out, R], b' [d_out], Q [S, R], P [S], info [λ, escalations, fallback])."""
    if W.shape[1] != G.shape[0]:
        raise ValueError(f"W has {W.shape[1]} input channels but the statistics have {G.shape[0]}")
    if n <= 0:
        raise ValueError("no calibration tokens were accumulated (n = 0)")
    args = (G, s, n, W, b, kept, pruned, float(alpha), bool(intercept), bool(solve_fp64))
    return _call("liar_solve", backend, G.device, args)


__all__ = ["available", "gram_update", "gram_update_cross", "last_backend", "liar_solve", "resolve"]
