"""Phi-3 family: Phi3ForCausalLM.

Fused producers: qkv_proj stacks the q rows of every query head, then the k rows, then the v rows of every
KV head; gate_up_proj stacks every neuron's gate row, then every up row. The spec's row-map (`fused`) says
so, and the generic slicing keeps each segment's rows at its own offset. Phi-3's attention splits qkv with
`config.num_attention_heads`, so a pruned layer gets its own copy of the config with its own head counts.
No config flag gives o_proj / down_proj a bias: LIAR's intercept needs `liar.load_pruned`, the no-intercept
variant with uniform widths stays stock-loadable.
"""

from __future__ import annotations

import copy

from torch import nn

from liar.models.base import Architecture, LayerSizes


def _refresh(layer: nn.Module, sizes: LayerSizes, head_dim: int) -> None:
    attn = layer.self_attn
    attn.config = copy.copy(attn.config)  # the model's config is shared by every layer; widths may differ
    attn.config.num_attention_heads = sizes.num_heads
    attn.config.num_key_value_heads = sizes.num_kv_heads
    attn.num_key_value_heads = sizes.num_kv_heads
    attn.num_key_value_groups = sizes.num_heads // sizes.num_kv_heads


PHI3 = Architecture(
    name="phi3",
    model_types=("phi3",),
    layers=("model.layers", "layers"),
    q="self_attn.qkv_proj",
    k="self_attn.qkv_proj",
    v="self_attn.qkv_proj",
    o="self_attn.o_proj",
    ffn_in=("mlp.gate_up_proj",),
    ffn_out="mlp.down_proj",
    fused=(("self_attn.qkv_proj", ("q", "k", "v")), ("mlp.gate_up_proj", ("ffn", "ffn"))),
    refresh=_refresh,
)
