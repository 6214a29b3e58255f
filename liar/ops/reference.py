"""Pure-torch reference kernels: the spec every backend must match, and the default on every device.

gram_update:        G[upper] += xᵀx over the kept rows, s += Σ x, returns the row count (fp32 accumulation).
gram_update_cross:  the same for a student x_s, plus the teacher–student cross-Gram x_tᵀx_s and Σ x_t.
(liar_solve's reference, the only implementation, is `liar.ops.solve`.)
"""

from __future__ import annotations

import torch


def gram_update(G: torch.Tensor, s: torch.Tensor, x: torch.Tensor, mask: torch.Tensor | None = None) -> int:
    """G: [D, D] fp32 (upper triangle guaranteed), s: [D] fp32, x: [T, D] any float, mask: [T] bool or None."""
    if mask is not None:
        x = x[mask]
    xf = x.to(torch.float32)
    G.addmm_(xf.T, xf)
    s.add_(xf.sum(dim=0))
    return int(xf.shape[0])


def gram_update_cross(
    G_ss: torch.Tensor, G_ts: torch.Tensor, s_s: torch.Tensor, s_t: torch.Tensor,
    x_s: torch.Tensor, x_t: torch.Tensor, mask: torch.Tensor | None = None,
) -> int:
    """Student Gram and teacher–student cross-Gram over the kept rows, fp32 accumulation.

    G_ss: [D_s, D_s] += x_sᵀx_s (upper triangle guaranteed), G_ts: [D_t, D_s] += x_tᵀx_s (full, not symmetric),
    s_s: [D_s] += Σ x_s, s_t: [D_t] += Σ x_t; x_s: [T, D_s], x_t: [T, D_t] of one float dtype, mask: [T] bool.
    """
    if mask is not None:
        x_s, x_t = x_s[mask], x_t[mask]
    xs, xt = x_s.to(torch.float32), x_t.to(torch.float32)
    G_ss.addmm_(xs.T, xs)
    G_ts.addmm_(xt.T, xs)
    s_s.add_(xs.sum(dim=0))
    s_t.add_(xt.sum(dim=0))
    return int(xs.shape[0])
