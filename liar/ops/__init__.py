"""liar.ops: the fused operations behind the pipeline, usable on their own as a library.

    gram_update(G, s, x, mask=None, backend="auto") -> int
    liar_solve(G, s, n, W, b, kept, pruned, alpha=1e-2, intercept=True, solve_fp64=False, backend="auto")

`backend` ∈ {auto, torch, cpp, triton, cuda}. `auto` picks the fastest available kernel for the tensors'
device; `last_backend(op)` tells which one served the latest call (the run report records it).
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


def _check_gram_args(G: torch.Tensor, s: torch.Tensor, x: torch.Tensor, mask: torch.Tensor | None) -> None:
    D = G.shape[0]
    if G.dtype != torch.float32 or s.dtype != torch.float32:
        raise TypeError(f"G and s must be float32 accumulators (got {G.dtype}, {s.dtype})")
    if G.shape != (D, D) or s.shape != (D,):
        raise ValueError(f"G must be [D, D] and s [D]; got G {tuple(G.shape)}, s {tuple(s.shape)}")
    if x.dim() != 2 or x.shape[1] != D:
        raise ValueError(f"x must be [tokens, {D}] to match G; got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating tensor; got {x.dtype}")
    if mask is not None and (mask.shape != (x.shape[0],) or mask.dtype != torch.bool):
        raise ValueError(f"mask must be bool [{x.shape[0]}]; got {mask.dtype} {tuple(mask.shape)}")
    if len({G.device, s.device, x.device} | ({mask.device} if mask is not None else set())) != 1:
        raise ValueError("G, s, x and mask must be on one device")


def gram_update(
    G: torch.Tensor, s: torch.Tensor, x: torch.Tensor, mask: torch.Tensor | None = None, backend: str = "auto"
) -> int:
    """G += xᵀx (upper triangle guaranteed; read it symmetrized), s += Σx over rows kept by mask; returns rows."""
    _check_gram_args(G, s, x, mask)
    return _call("gram_update", backend, x.device, (G, s, x, mask))


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


__all__ = ["available", "gram_update", "last_backend", "liar_solve", "resolve"]
