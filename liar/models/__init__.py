"""Architecture registry: which spec serves a given model."""

from __future__ import annotations

from liar.models.base import Architecture, LayerSizes
from liar.models.bert import BERT
from liar.models.gemma3 import GEMMA3
from liar.models.llama import LLAMA, MISTRAL, QWEN2
from liar.models.mixtral import MIXTRAL, QWEN3_MOE
from liar.models.opt import OPT
from liar.models.phi3 import PHI3
from liar.models.qwen3 import QWEN3

ARCHITECTURES: dict[str, Architecture] = {}


def register(arch: Architecture) -> Architecture:
    for model_type in arch.model_types:
        ARCHITECTURES[model_type] = arch
    return arch


for _arch in (LLAMA, MISTRAL, QWEN2, QWEN3, GEMMA3, PHI3, OPT, MIXTRAL, QWEN3_MOE, BERT):
    register(_arch)


def architecture_for(model) -> Architecture:
    """The spec for `model` (a transformers PreTrainedModel), chosen by `config.model_type`."""
    model_type = getattr(model.config, "model_type", None)
    if model_type not in ARCHITECTURES:
        raise ValueError(
            f"unsupported architecture {model_type!r} ({type(model).__name__}); liar supports: "
            f"{', '.join(sorted(ARCHITECTURES))}. Adding one is a single file in liar/models/ (see llama.py)."
        )
    return ARCHITECTURES[model_type]


__all__ = ["ARCHITECTURES", "Architecture", "LayerSizes", "architecture_for", "register"]
