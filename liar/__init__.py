"""liar: structured pruning of transformer language models with LIAR reconstruction (arXiv 2407.13331).

    import liar
    report = liar.prune("path/to/model", "out/pruned", liar.PruneConfig(ratio=0.2))
    model = liar.load_pruned("out/pruned")
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# Imported on first use, so `import liar.cli` (the `liar` command) does not pay for torch before parsing.
_PUBLIC = {"prune": "liar.api", "PruneConfig": "liar.config", "load_pruned": "liar.io.load",
           "PruneReport": "liar.report"}

__all__ = ["PruneConfig", "PruneReport", "__version__", "load_pruned", "prune"]


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'liar' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
