"""LLaMA family: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM (and their base models)."""

from __future__ import annotations

import dataclasses

from torch import nn

from liar.models.base import Architecture, LayerSizes


def _refresh(layer: nn.Module, sizes: LayerSizes, head_dim: int) -> None:
    # eager attention repeats K/V by this factor; the head count itself is read off the tensor shapes.
    layer.self_attn.num_key_value_groups = sizes.num_heads // sizes.num_kv_heads
    if hasattr(layer.mlp, "intermediate_size"):
        layer.mlp.intermediate_size = sizes.ffn


# Stock LlamaConfig switches a bias on for all of q/k/v/o (`attention_bias`) and gate/up/down (`mlp_bias`),
# so LIAR's intercept travels in a stock checkpoint.
LLAMA = Architecture(
    name="llama",
    model_types=("llama",),
    layers=("model.layers", "layers"),
    q="self_attn.q_proj",
    k="self_attn.k_proj",
    v="self_attn.v_proj",
    o="self_attn.o_proj",
    ffn_in=("mlp.gate_proj", "mlp.up_proj"),
    ffn_out="mlp.down_proj",
    attn_bias_flag="attention_bias",
    mlp_bias_flag="mlp_bias",
    refresh=_refresh,
    # LlamaConfig validates hidden_size % num_attention_heads == 0 even when head_dim is explicit.
    stock_heads_ok=lambda config, heads: config.hidden_size % heads == 0,
)

# Same modules; their configs have no flag that gives o_proj / down_proj a bias.
_NO_BIAS_FLAGS = dict(attn_bias_flag=None, mlp_bias_flag=None, stock_heads_ok=None)
MISTRAL = dataclasses.replace(LLAMA, name="mistral", model_types=("mistral",), **_NO_BIAS_FLAGS)
QWEN2 = dataclasses.replace(LLAMA, name="qwen2", model_types=("qwen2",), **_NO_BIAS_FLAGS)
