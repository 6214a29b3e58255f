"""Choosing and running a backend for one call: `auto` by capability and self-check, or a backend by name.

`auto` takes, in AUTO_ORDER for the tensors' device and dtype, the first backend that serves the op for that
device and activation dtype and has passed its self-check there (`liar.ops.selfcheck`); the torch reference
always serves. `LIAR_BACKEND=<name>` (read at import) puts that backend first: a name that is not a backend is a
warning at import and an error at the first `auto` call. `last_backend(op)` names the backend that served
the latest call.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

from liar.ops import contract, selfcheck
from liar.ops.backends import BACKENDS

log = logging.getLogger(__name__)

# Preference order of `backend="auto"` per device type, or per "device/dtype" where a measurement says the
# dtype decides. On CUDA, Triton first: its kernel lowers to wgmma on sm_90; both GPU kernels pass the
# self-check before auto uses them. On CPU, 16-bit activations go to the cpp kernels (AMX-BF16: 6.3–7.1× the
# reference at D 576–4096, bench/results/cpu_kernel_*) and fp32/fp64 to the reference, whose matmuls are MKL's:
# the cpp fp32 Gram took 1.28× / 1.02× its CPU time at D 576 / 1536 (…T230402.csv), the cross-moment 1.39× /
# 1.35× (T 4096, H 576), and a sequential SmolLM2 prune's statistics 37–39 s vs 26–27 s (32 × 512 tokens).
AUTO_ORDER: dict[str, tuple[str, ...]] = {"cpu": ("cpp", "torch"), "cpu/float32": ("torch", "cpp"),
                                          "cpu/float64": ("torch", "cpp"), "cuda": ("triton", "cuda", "torch")}

_LAST: dict[str, str] = {}
_ENV_ERROR: list[str] = []


def last_backend(op: str) -> str | None:
    return _LAST.get(op)


def record(op: str, name: str) -> None:
    _LAST[op] = name


def _env_override() -> None:
    name = os.environ.get("LIAR_BACKEND", "").strip()
    if not name or name == "auto":
        return
    if name not in BACKENDS:
        message = (f"LIAR_BACKEND={name!r} is not a backend; choose auto, {', '.join(BACKENDS)} "
                   "(or unset it)")
        _ENV_ERROR.append(message)
        warnings.warn(f"liar: {message}; ops with backend='auto' will raise until it is fixed", RuntimeWarning,
                      stacklevel=2)
        return
    for key in AUTO_ORDER:
        if key.split("/")[0] in BACKENDS[name].devices:
            AUTO_ORDER[key] = (name, *(b for b in AUTO_ORDER[key] if b != name))
    if not BACKENDS[name].available:
        log.warning("LIAR_BACKEND=%s is unavailable (%s); auto falls back to the next backend", name,
                    BACKENDS[name].error)


@contextmanager
def prefer(name: str) -> Iterator[None]:
    """Within the block, `auto` tries backend `name` first (tests run the registered ops on each backend)."""
    saved = dict(AUTO_ORDER)
    for key in AUTO_ORDER:
        AUTO_ORDER[key] = (name, *(b for b in AUTO_ORDER[key] if b != name))
    try:
        yield
    finally:
        AUTO_ORDER.update(saved)


def auto_order(device: torch.device | str, dtype: torch.dtype) -> tuple[str, ...]:
    """The backends `auto` tries, in order, for activations of `dtype` on `device`."""
    kind = torch.device(device).type
    return AUTO_ORDER.get(f"{kind}/{str(dtype).removeprefix('torch.')}") or AUTO_ORDER.get(kind, ("torch",))


def _auto(op: str, device: torch.device, dtype: torch.dtype) -> str:
    if _ENV_ERROR:
        raise ValueError(_ENV_ERROR[0])
    for name in auto_order(device, dtype):
        backend = BACKENDS.get(name)
        if backend is not None and backend.serves(op, device.type, dtype) and selfcheck.trusted(name, op, device,
                                                                                                  dtype):
            return name
    return "torch"


def resolve(op: str, backend: str, device: torch.device, dtype: torch.dtype = torch.float32) -> str:
    """The backend that serves `op` for `device` and activation `dtype` when `backend` (auto or a name) is asked."""
    if backend == "auto":
        return _auto(op, device, dtype)
    chosen = BACKENDS.get(backend)
    if chosen is None:
        raise ValueError(f"unknown backend {backend!r}; known: auto, {', '.join(BACKENDS)}")
    if not chosen.available:
        raise RuntimeError(f"backend {backend!r} is unavailable: {chosen.error}; use backend='auto'")
    if device.type not in chosen.devices:
        raise RuntimeError(f"backend {backend!r} has no kernels for {device.type} tensors (it serves "
                           f"{', '.join(chosen.devices)}); use backend='auto'")
    if op not in chosen.kernels:
        return "torch"  # liar_solve: the reference on every backend (see backends.py)
    if dtype not in chosen.dtypes:
        raise TypeError(f"backend {backend!r} has no {str(dtype).removeprefix('torch.')} kernel for {op}; "
                        f"use backend='auto' or 'torch'")
    return backend


def run(op: str, backend: str, args: tuple) -> None:
    """Check the arguments against the contract, pick the backend, run its kernel on contiguous accumulators."""
    n_acc = 2 if op == "gram_update" else 4
    (contract.check_gram if op == "gram_update" else contract.check_cross)(*args)
    x = args[n_acc]
    name = resolve(op, backend, x.device, x.dtype)
    kernel: Callable = BACKENDS[name].kernels[op]
    activations = tuple(contract.rows_contiguous(t) for t in args[n_acc:-1])
    mask = None if args[-1] is None else args[-1].contiguous()
    with contract.contiguous_accumulators(args[:n_acc]) as acc:
        kernel(*acc, *activations, mask)
    record(op, name)


_env_override()
