"""Which implementation can serve each op: backend names, their capability table, availability.

    backend  devices      activation dtypes            ops
    torch    cpu, cuda    fp32, fp16, bf16, fp64       gram_update, gram_update_cross (the reference, the spec)
    cpp      cpu          fp32, fp16, bf16, fp64       gram_update, gram_update_cross (liar._C)
    cuda     cuda         fp32, fp16, bf16, fp64       gram_update, gram_update_cross (liar._C built with CUDA)
    triton   cuda (+cpu)  fp32, fp16, bf16             gram_update, gram_update_cross (cpu: TRITON_INTERPRET=1)

liar_solve is the pure-torch `liar.ops.solve` on every device: a handful of LAPACK/cuSOLVER calls on R×R
systems, so a compiled copy would run the same library code. Accumulators are float32 of any layout for
every backend (`liar.ops.contract`). A missing binary never breaks import — it only makes that backend
unavailable, with the reason kept for the error.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from liar import _ext
from liar.ops import reference

GRAM_OPS = ("gram_update", "gram_update_cross")
FLOATS = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


@dataclass
class Backend:
    """One implementation: where it runs (devices, activation dtypes), its kernels, or why it is unavailable."""

    name: str
    devices: tuple[str, ...]
    dtypes: tuple[torch.dtype, ...] = FLOATS
    kernels: dict[str, Callable] = field(default_factory=dict)
    error: str | None = None

    @property
    def available(self) -> bool:
        return self.error is None

    def serves(self, op: str, device_type: str, dtype: torch.dtype) -> bool:
        return self.available and op in self.kernels and device_type in self.devices and dtype in self.dtypes

    def capabilities(self) -> dict:
        return {"devices": list(self.devices), "dtypes": [str(d).removeprefix("torch.") for d in self.dtypes],
                "layouts": "any (non-contiguous accumulators go through a contiguous temporary)",
                "ops": sorted(self.kernels), "available": self.available, "error": self.error}


def _torch_backend() -> Backend:
    return Backend("torch", ("cpu", "cuda"), kernels={op: getattr(reference, op) for op in GRAM_OPS})


def _cpp_backend() -> Backend:
    if not _ext.HAS_EXT:
        return Backend("cpp", ("cpu",), error=_ext.EXT_ERROR)
    return Backend("cpp", ("cpu",), kernels={"gram_update": _ext.ext.gram_update_cpu,
                                             "gram_update_cross": _ext.ext.gram_update_cross_cpu})


def _cuda_backend() -> Backend:
    if not _ext.HAS_EXT:
        return Backend("cuda", ("cuda",), error=_ext.EXT_ERROR)
    if not getattr(_ext.ext, "WITH_CUDA", False):
        return Backend("cuda", ("cuda",), error="liar._C was built without CUDA (no CUDA torch or toolkit at build "
                                                "time, or LIAR_SKIP_CUDA_BUILD was set)")
    if not torch.cuda.is_available():
        return Backend("cuda", ("cuda",), error="torch sees no CUDA device")
    return Backend("cuda", ("cuda",), kernels={"gram_update": _ext.ext.gram_update_cuda,
                                               "gram_update_cross": _ext.ext.gram_update_cross_cuda})


def _triton_backend() -> Backend:
    interpret = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
    devices = ("cuda", "cpu") if interpret else ("cuda",)
    dtypes = (torch.float32, torch.float16, torch.bfloat16)
    if importlib.util.find_spec("triton") is None:
        return Backend("triton", devices, dtypes, error="triton is not installed (pip install triton)")
    if not (interpret or torch.cuda.is_available()):
        return Backend("triton", devices, dtypes,
                       error="torch sees no CUDA device (TRITON_INTERPRET=1 runs it on CPU, slowly)")
    try:
        from liar.triton_kernels import gram
    except Exception as err:  # a broken triton install must not break liar
        return Backend("triton", devices, dtypes,
                       error=f"liar.triton_kernels did not import ({type(err).__name__}: {err})")
    return Backend("triton", devices, dtypes,
                   kernels={"gram_update": gram.gram_update, "gram_update_cross": gram.gram_update_cross})


BACKENDS: dict[str, Backend] = {b.name: b for b in (_torch_backend(), _cpp_backend(), _cuda_backend(),
                                                    _triton_backend())}


def capabilities() -> dict[str, dict]:
    """The capability table: backend name -> devices, dtypes, layouts, ops, availability."""
    return {name: b.capabilities() for name, b in BACKENDS.items()}


def available() -> dict[str, str | None]:
    """Backend name -> None when usable, else the reason it is not."""
    return {name: b.error for name, b in BACKENDS.items()}
