"""The compiled kernels `liar._C`, when built and compatible with the running torch. Never raises.

    HAS_EXT    True when liar._C imported and was built against this torch
    EXT_ERROR  why not, otherwise (shown when a compiled backend is asked for by name)
    ext        the module, or None

`LIAR_DISABLE_EXT=1` ignores a built module (the pure-torch reference then serves every op).
"""

from __future__ import annotations

import logging
import os
import warnings
from types import ModuleType

import torch

log = logging.getLogger(__name__)

REBUILD = "rebuild it with `pip install --no-build-isolation -e .` under the torch you run"


def _load() -> tuple[ModuleType | None, str | None]:
    if os.environ.get("LIAR_DISABLE_EXT", "").strip().lower() in ("1", "true", "yes", "on"):
        return None, "LIAR_DISABLE_EXT is set"
    try:
        from liar import _C
    except Exception as err:  # ImportError, or OSError/undefined symbol from an ABI mismatch
        return None, f"liar._C did not load ({type(err).__name__}: {err}); {REBUILD}"
    built = getattr(_C, "TORCH_VERSION", "unknown")
    if built != torch.__version__:
        message = f"liar._C was built against torch {built} but torch {torch.__version__} is running; {REBUILD}"
        warnings.warn(message + " (using the torch reference kernels meanwhile)", RuntimeWarning, stacklevel=2)
        return None, message
    return _C, None


ext, EXT_ERROR = _load()
HAS_EXT = ext is not None
if EXT_ERROR:
    log.debug("compiled kernels unavailable: %s", EXT_ERROR)
