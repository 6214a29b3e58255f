"""liar: structured pruning of transformer language models with LIAR reconstruction (arXiv 2407.13331).

    import liar
    report = liar.prune("path/to/model", "out/pruned", liar.PruneConfig(ratio=0.2))
    model = liar.load_pruned("out/pruned")
"""

from __future__ import annotations

__version__ = "0.1.0"

from liar.api import prune  # noqa: E402
from liar.config import PruneConfig  # noqa: E402
from liar.io.load import load_pruned  # noqa: E402
from liar.report import PruneReport  # noqa: E402

__all__ = ["PruneConfig", "PruneReport", "__version__", "load_pruned", "prune"]
