"""The one argument contract of the liar ops, checked the same way for every backend and every entry point.

Accumulators (G, s, G_ts, s_t) are float32 tensors of any layout: transposed or sliced ones are accumulated
through a contiguous temporary and copied back (`contiguous_accumulators`), so every backend sees contiguous
sums and computes the reference's answer. Activations are [tokens, D] floating tensors of one dtype; a mask
is bool [tokens]; everything on one device. A violation raises a TypeError/ValueError that names the argument,
what was expected and what to do.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch


def _accumulator(t: torch.Tensor, name: str, shape: tuple[int, ...]) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(t).__name__}")
    if t.dtype != torch.float32:
        raise TypeError(f"{name} must be a float32 accumulator (got {t.dtype}); create it with "
                        f"torch.zeros(..., dtype=torch.float32)")
    if tuple(t.shape) != shape:
        raise ValueError(f"{name} must be {list(shape)} for these activations; got {list(t.shape)}")


def _activations(x: torch.Tensor, name: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(x).__name__}")
    if x.dim() != 2:
        raise ValueError(f"{name} must be [tokens, D]; got shape {list(x.shape)} (reshape to (-1, D) first)")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating tensor; got {x.dtype} (cast the activations to float)")


def _mask(mask: torch.Tensor | None, tokens: int) -> None:
    if mask is not None and (mask.dtype != torch.bool or tuple(mask.shape) != (tokens,)):
        raise ValueError(f"mask must be bool [{tokens}] (True = a real token); got {mask.dtype} {list(mask.shape)}")


def _one_device(named: dict[str, torch.Tensor | None]) -> None:
    devices = {name: t.device for name, t in named.items() if t is not None}
    if len(set(devices.values())) > 1:
        listed = ", ".join(f"{n} on {d}" for n, d in devices.items())
        raise ValueError(f"all arguments must be on one device; got {listed} (move them with .to(device))")


def check_gram(G: torch.Tensor, s: torch.Tensor, x: torch.Tensor, mask: torch.Tensor | None) -> None:
    """gram_update: G [D, D] and s [D] float32, x [T, D] floating, mask bool [T] or None, one device."""
    _activations(x, "x")
    D = x.shape[1]
    _accumulator(G, "G", (D, D))
    _accumulator(s, "s", (D,))
    _mask(mask, x.shape[0])
    _one_device({"G": G, "s": s, "x": x, "mask": mask})


def check_cross(G_ss: torch.Tensor, G_ts: torch.Tensor, s_s: torch.Tensor, s_t: torch.Tensor,
                x_s: torch.Tensor, x_t: torch.Tensor, mask: torch.Tensor | None) -> None:
    """gram_update_cross: the student's gram_update contract, plus x_t [T, D_t] of x_s's dtype, G_ts [D_t, D_s]."""
    check_gram(G_ss, s_s, x_s, mask)
    _activations(x_t, "x_t")
    if x_t.shape[0] != x_s.shape[0] or x_t.dtype != x_s.dtype:
        raise ValueError(f"x_t must be [{x_s.shape[0]}, D_t] of dtype {x_s.dtype} like x_s (the same tokens); "
                         f"got {x_t.dtype} {list(x_t.shape)}")
    _accumulator(G_ts, "G_ts", (x_t.shape[1], x_s.shape[1]))
    _accumulator(s_t, "s_t", (x_t.shape[1],))
    _one_device({"G_ss": G_ss, "G_ts": G_ts, "s_t": s_t, "x_s": x_s, "x_t": x_t})


def _indices(t: torch.Tensor, name: str, D: int) -> None:
    if t.dtype != torch.long or t.dim() != 1:
        raise TypeError(f"{name} must be a 1-D int64 tensor of channel indices; got {t.dtype} {list(t.shape)}")
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= D):
        raise ValueError(f"{name} holds channel indices outside [0, {D})")


def check_solve(G: torch.Tensor, s: torch.Tensor, n: int, W: torch.Tensor, b: torch.Tensor | None,
                kept: torch.Tensor, pruned: torch.Tensor, alpha: float) -> None:
    """liar_solve: statistics of D channels, W [d_out, D], b [d_out] or None, kept ∪ pruned = every channel."""
    D = s.shape[0] if s.dim() == 1 else -1
    _accumulator(G, "G", (D, D))
    _accumulator(s, "s", (D,))
    if W.dim() != 2 or W.shape[1] != D or not W.is_floating_point():
        raise ValueError(f"W must be a floating [d_out, {D}] weight for statistics of {D} channels; "
                         f"got {W.dtype} {list(W.shape)}")
    if b is not None and tuple(b.shape) != (W.shape[0],):
        raise ValueError(f"b must be [{W.shape[0]}] (one per output) or None; got {list(b.shape)}")
    if n <= 0:
        raise ValueError("no calibration tokens were accumulated (n = 0); feed activations before solving")
    if not math.isfinite(alpha) or alpha < 0:
        raise ValueError(f"alpha must be a finite number ≥ 0; got {alpha}")
    _indices(kept, "kept", D)
    _indices(pruned, "pruned", D)
    if kept.numel() + pruned.numel() != D:
        raise ValueError(f"kept ({kept.numel()}) and pruned ({pruned.numel()}) must split all {D} channels")
    _one_device({"G": G, "s": s, "kept": kept, "pruned": pruned})


@contextmanager
def contiguous_accumulators(tensors: Sequence[torch.Tensor]) -> Iterator[list[torch.Tensor]]:
    """Yields contiguous versions of `tensors`; non-contiguous ones go through a temporary copied back after."""
    work = [t if t.is_contiguous() else t.contiguous() for t in tensors]
    yield work
    for original, tmp in zip(tensors, work):
        if tmp is not original:
            original.copy_(tmp)


def rows_contiguous(x: torch.Tensor) -> torch.Tensor:
    """Kernels read rows with any stride but channels with unit stride."""
    return x if x.stride(-1) == 1 or x.shape[-1] <= 1 else x.contiguous()
