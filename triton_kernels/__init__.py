"""liar.triton_kernels: Triton GPU kernels (installed under the liar namespace; see setup.py).

Importing this package never imports triton; `gram` does, so import it only where `has_triton()`.
On CPU the kernels run under the interpreter: set TRITON_INTERPRET=1 before the first `import triton`.
"""

from __future__ import annotations

import importlib.util
import os


def has_triton() -> bool:
    return importlib.util.find_spec("triton") is not None


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


__all__ = ["has_triton", "interpreting"]
