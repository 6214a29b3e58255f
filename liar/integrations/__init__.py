"""Optional integrations with other compression tools (each an extra; `import liar` imports none of them).

- `liar.integrations.torch_pruning` (extra `liar[torch-pruning]`): LIAR / bias reconstruction inside
  Torch-Pruning's interactive loop, and `python -m liar.integrations.torch_pruning`.
- `liar.integrations.llmcompressor` (extra `liar[llmcompressor]`): `LIARPruningModifier` for llm-compressor's
  `oneshot` recipes.
"""

from __future__ import annotations

import importlib
from types import ModuleType


def require(module: str, package: str, extra: str) -> ModuleType:
    """Import `module` or fail naming the pip package and the liar extra that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(
            f"this integration needs the `{package}` package, which is not installed ({e}); "
            f"install it with: pip install 'liar[{extra}]'"
        ) from e
