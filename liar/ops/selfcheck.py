"""Trust a compiled kernel only after it matched the reference once on this device, in this process.

Before `auto` hands an op to a non-reference backend for a (device, dtype) it has not seen yet, the kernel runs
on a small random input (odd sizes, a mask, non-zero starting sums) next to the torch reference. A mismatch is
a warning, the backend is skipped for that (op, device, dtype) from then on, and `results()` lists it so the
run report can say so.
"""

from __future__ import annotations

import logging
import warnings

import torch

from liar.ops import reference
from liar.ops.backends import BACKENDS

log = logging.getLogger(__name__)

# 16-bit inputs are exact in fp32 products; 53 fp32 additions differ from float64 by ~1e-7 relative, and
# tensor-core partial sums by ~1e-6. A wrong kernel (layout, missed tile, race) is off by O(1).
TOLERANCE = 1e-4
TOKENS, DIM, DIM_T = 53, 37, 11

# Positions of the accumulators each op writes; position 0 is a symmetric Gram.
OUTPUTS = {"gram_update": (0, 1), "gram_update_cross": (0, 1, 2, 3)}

_RESULTS: dict[tuple[str, str, str, torch.dtype], str | None] = {}


def _inputs(op: str, device: torch.device, dtype: torch.dtype) -> tuple:
    g = torch.Generator().manual_seed(1234)
    x = (torch.randn(TOKENS, DIM, generator=g) + torch.rand(DIM, generator=g)).to(device=device, dtype=dtype)
    mask = (torch.rand(TOKENS, generator=g) > 0.25).to(device)
    G, s = torch.rand(DIM, DIM, generator=g).to(device), torch.rand(DIM, generator=g).to(device)
    if op == "gram_update":
        return G, s, x, mask
    xt = torch.randn(TOKENS, DIM_T, generator=g).to(device=device, dtype=dtype)
    G_ts, s_t = torch.rand(DIM_T, DIM, generator=g).to(device), torch.rand(DIM_T, generator=g).to(device)
    return G, G_ts, s, s_t, x, xt, mask


def _mismatch(op: str, kernel, device: torch.device, dtype: torch.dtype) -> str | None:
    """None when `kernel` matches the reference on the upper triangle of every Gram and on every sum."""
    got, want = _inputs(op, device, dtype), _inputs(op, device, dtype)
    try:
        kernel(*got)
    except Exception as err:  # a kernel that crashes on a valid input is as untrustworthy as a wrong one
        return f"raised {type(err).__name__}: {err}"
    getattr(reference, op)(*want)
    for index in OUTPUTS[op]:
        a, b = got[index], want[index]
        if index == 0:  # a symmetric Gram: only the upper triangle is promised
            a, b = a.triu(), b.triu()
        err = float((a.double() - b.double()).norm() / b.double().norm())
        if not err <= TOLERANCE:
            return f"output {index} differs from the reference by {err:.2e} (tolerance {TOLERANCE:.0e})"
    return None


def trusted(name: str, op: str, device: torch.device, dtype: torch.dtype) -> bool:
    """Whether backend `name` matched the reference for (op, device, dtype); checked on first use."""
    if name == "torch":
        return True
    key = (name, op, str(device), dtype)
    if key not in _RESULTS:
        _RESULTS[key] = _mismatch(op, BACKENDS[name].kernels[op], device, dtype)
        if _RESULTS[key] is None:
            log.debug("self-check passed: %s %s on %s %s", name, op, device, dtype)
        else:
            warnings.warn(f"liar: the {name} kernel of {op} failed its self-check on {device} ({dtype}): "
                          f"{_RESULTS[key]}; using the next backend (the torch reference at worst). "
                          "Report this with the output of `python bench/gpu_check.py`.", RuntimeWarning, stacklevel=3)
    return _RESULTS[key] is None


def results() -> dict[str, str]:
    """Every self-check run so far: 'backend op device dtype' -> 'ok' or why it failed."""
    return {f"{n} {op} {dev} {str(dt).removeprefix('torch.')}": "ok" if r is None else r
            for (n, op, dev, dt), r in _RESULTS.items()}


def reset() -> None:
    """Forget every verdict (tests)."""
    _RESULTS.clear()
