"""Which implementation serves each op: backend names, availability, and the `auto` choice per device.

torch: the pure-torch reference (always available, the spec).
Further backends (cpp, triton, cuda) register here when their compiled parts import; a missing binary
never breaks import — it only makes that backend unavailable, with the reason kept for the error.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from liar.ops import reference


@dataclass
class Backend:
    name: str
    devices: tuple[str, ...]
    kernels: dict[str, Callable] = field(default_factory=dict)
    error: str | None = None

    @property
    def available(self) -> bool:
        return self.error is None


BACKENDS: dict[str, Backend] = {
    "torch": Backend(
        "torch", ("cpu", "cuda"),
        {"gram_update": reference.gram_update, "liar_solve": reference.liar_solve},
    ),
}

# Preference order of `backend="auto"` per device type; the first available one that has the op wins.
AUTO_ORDER: dict[str, tuple[str, ...]] = {"cpu": ("cpp", "torch"), "cuda": ("cuda", "triton", "torch")}


def resolve(op: str, backend: str, device: torch.device) -> str:
    """The backend name that serves `op` on `device` for the requested `backend` (auto or a name)."""
    if backend == "auto":
        for name in AUTO_ORDER.get(device.type, ("torch",)):
            candidate = BACKENDS.get(name)
            if candidate is not None and candidate.available and op in candidate.kernels:
                return name
        return "torch"
    chosen = BACKENDS.get(backend)
    if chosen is None:
        raise ValueError(f"unknown backend {backend!r}; known: auto, {', '.join(BACKENDS)}")
    if not chosen.available:
        raise RuntimeError(f"backend {backend!r} is unavailable: {chosen.error}")
    if device.type not in chosen.devices or op not in chosen.kernels:
        raise RuntimeError(f"backend {backend!r} has no {op} kernel for {device.type} tensors; use backend='auto'")
    return backend


def kernel(op: str, backend: str, device: torch.device) -> tuple[str, Callable]:
    name = resolve(op, backend, device)
    return name, BACKENDS[name].kernels[op]


def available() -> dict[str, str | None]:
    """Backend name -> None when usable, else the reason it is not."""
    return {name: b.error for name, b in BACKENDS.items()}
