"""liar: structured pruning of transformer language models with LIAR reconstruction (arXiv 2407.13331).

    import liar
    report = liar.prune("path/to/model", "out/pruned", liar.PruneConfig(ratio=0.2))
    model = liar.load_pruned("out/pruned")

`import liar` is light: the names below load their modules (and transformers) on first use (PEP 562), so
`import liar.ops` costs torch only.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_LAZY = {"prune": "liar.api", "PruneConfig": "liar.config", "load_pruned": "liar.io.load",
         "PruneReport": "liar.report"}

if TYPE_CHECKING:
    from liar.api import prune
    from liar.config import PruneConfig
    from liar.io.load import load_pruned
    from liar.report import PruneReport


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'liar' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = ["PruneConfig", "PruneReport", "__version__", "load_pruned", "prune"]
