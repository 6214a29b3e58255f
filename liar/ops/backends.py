"""Which implementation serves each op: backend names, availability, and the `auto` choice per device.

    torch   the pure-torch reference (always available, the spec), every device
    cpp     liar._C CPU kernels (gram_update, gram_update_cross); needs the built extension
    cuda    liar._C CUDA kernels; needs the extension built with CUDA and a visible GPU
    triton  liar.triton_kernels; needs triton and a GPU, or TRITON_INTERPRET=1 (CPU, slow: tests only)

A missing binary never breaks import — it only makes that backend unavailable, with the reason kept for the
error. `auto` takes the first available backend of AUTO_ORDER that has the op for the tensors' device, and the
same choice is registered as that device's kernel of the torch.library op, so `torch.ops.liar.*` and
`last_backend` agree. `LIAR_BACKEND=<name>` (read at import) puts that backend first wherever it applies.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from liar import _ext
from liar.ops import library, reference

log = logging.getLogger(__name__)

OPS = ("gram_update", "gram_update_cross", "liar_solve")


@dataclass
class Backend:
    name: str
    devices: tuple[str, ...]
    kernels: dict[str, Callable] = field(default_factory=dict)
    error: str | None = None

    @property
    def available(self) -> bool:
        return self.error is None


def _torch_backend() -> Backend:
    return Backend("torch", ("cpu", "cuda"), {op: getattr(reference, op) for op in OPS})


def _cpp_backend() -> Backend:
    if not _ext.HAS_EXT:
        return Backend("cpp", ("cpu",), error=_ext.EXT_ERROR)
    # No liar_solve here: the reference solve is a handful of LAPACK calls (cholesky_ex, cholesky_solve) on
    # R×R systems, so a C++ copy would run the same library code (see bench/README.md).
    return Backend("cpp", ("cpu",), {"gram_update": _ext.ext.gram_update_cpu,
                                     "gram_update_cross": _ext.ext.gram_update_cross_cpu})


def _cuda_backend() -> Backend:
    if not _ext.HAS_EXT:
        return Backend("cuda", ("cuda",), error=_ext.EXT_ERROR)
    if not getattr(_ext.ext, "WITH_CUDA", False):
        return Backend("cuda", ("cuda",), error="liar._C was built without CUDA (no CUDA torch or toolkit at build "
                                                "time, or LIAR_SKIP_CUDA_BUILD was set)")
    if not torch.cuda.is_available():
        return Backend("cuda", ("cuda",), error="torch sees no CUDA device")
    return Backend("cuda", ("cuda",), {"gram_update": _ext.ext.gram_update_cuda,
                                       "gram_update_cross": _ext.ext.gram_update_cross_cuda})


def _triton_backend() -> Backend:
    interpret = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
    devices = ("cuda", "cpu") if interpret else ("cuda",)
    if importlib.util.find_spec("triton") is None:
        return Backend("triton", devices, error="triton is not installed (pip install triton)")
    if not (interpret or torch.cuda.is_available()):
        return Backend("triton", devices, error="torch sees no CUDA device (TRITON_INTERPRET=1 runs it on CPU, slowly)")
    try:
        from liar.triton_kernels import gram
    except Exception as err:  # a broken triton install must not break liar
        return Backend("triton", devices, error=f"liar.triton_kernels did not import ({type(err).__name__}: {err})")
    return Backend("triton", devices, {"gram_update": gram.gram_update, "gram_update_cross": gram.gram_update_cross})


BACKENDS: dict[str, Backend] = {b.name: b for b in (_torch_backend(), _cpp_backend(), _cuda_backend(),
                                                    _triton_backend())}

# Preference order of `backend="auto"` per device type; the first available one that has the op wins.
AUTO_ORDER: dict[str, tuple[str, ...]] = {"cpu": ("cpp", "torch"), "cuda": ("cuda", "triton", "torch")}


def _apply_env_override() -> None:
    name = os.environ.get("LIAR_BACKEND", "").strip()
    if not name or name == "auto":
        return
    if name not in BACKENDS:
        raise ValueError(f"LIAR_BACKEND={name!r} is not a backend; choose auto, {', '.join(BACKENDS)}")
    for device in AUTO_ORDER:
        if device in BACKENDS[name].devices:
            AUTO_ORDER[device] = (name, *(b for b in AUTO_ORDER[device] if b != name))
    if not BACKENDS[name].available:
        log.warning("LIAR_BACKEND=%s is unavailable (%s); auto falls back to the next backend", name,
                    BACKENDS[name].error)


def _auto(op: str, device_type: str) -> str:
    for name in AUTO_ORDER.get(device_type, ("torch",)):
        candidate = BACKENDS.get(name)
        if candidate is not None and candidate.available and op in candidate.kernels \
                and device_type in candidate.devices:
            return name
    return "torch"


def resolve(op: str, backend: str, device: torch.device) -> str:
    """The backend name that serves `op` on `device` for the requested `backend` (auto or a name)."""
    if backend == "auto":
        return _auto(op, device.type)
    chosen = BACKENDS.get(backend)
    if chosen is None:
        raise ValueError(f"unknown backend {backend!r}; known: auto, {', '.join(BACKENDS)}")
    if not chosen.available:
        raise RuntimeError(f"backend {backend!r} is unavailable: {chosen.error}")
    if device.type not in chosen.devices:
        raise RuntimeError(f"backend {backend!r} has no kernels for {device.type} tensors (it serves "
                           f"{', '.join(chosen.devices)}); use backend='auto'")
    return backend if op in chosen.kernels else "torch"


def kernel(op: str, backend: str, device: torch.device) -> tuple[str, Callable]:
    name = resolve(op, backend, device)
    return name, BACKENDS[name].kernels[op]


def available() -> dict[str, str | None]:
    """Backend name -> None when usable, else the reason it is not."""
    return {name: b.error for name, b in BACKENDS.items()}


def _as_op_kernel(op: str, fn: Callable) -> Callable:
    """The accumulating ops return nothing (library.py says why); backend kernels return the row count."""
    if op == "liar_solve":
        return fn

    def accumulate(*args):
        fn(*args)

    return accumulate


def _register_device_kernels() -> None:
    """Make each device's torch.library kernel the one `auto` picks (the reference stays the default)."""
    for op in OPS:
        custom = getattr(library, op)
        for device_type in AUTO_ORDER:
            name = _auto(op, device_type)
            if name != "torch":
                custom.register_kernel(device_type)(_as_op_kernel(op, BACKENDS[name].kernels[op]))
                log.debug("liar::%s on %s -> %s", op, device_type, name)


_apply_env_override()
_register_device_kernels()
