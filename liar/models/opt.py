"""OPT family: OPTForCausalLM (decoder.layers).

Plain multi-head attention (q/k/v_proj, out_proj), ReLU fc1 -> fc2, LayerNorms, and a bias on every linear
(`enable_bias`, on in every released OPT), so LIAR's intercept lands in the existing out_proj / fc2 biases.

Export: OPTAttention derives its head size as hidden_size / num_attention_heads (OPTConfig has no
head_dim), so a stock OPTConfig describes only the original head count. Head-pruned checkpoints are written
in liar's per-layer format (`liar.load_pruned`); FFN-only pruning with uniform widths stays stock-loadable.
"""

from __future__ import annotations

from torch import nn

from liar.models.base import Architecture, LayerSizes


def _refresh(layer: nn.Module, sizes: LayerSizes, head_dim: int) -> None:
    layer.self_attn.num_heads = sizes.num_heads  # the forward reshapes to (num_heads, head_dim)


OPT = Architecture(
    name="opt",
    model_types=("opt",),
    layers=("model.decoder.layers", "decoder.layers"),
    q="self_attn.q_proj",
    k="self_attn.k_proj",
    v="self_attn.v_proj",
    o="self_attn.out_proj",
    ffn_in=("fc1",),
    ffn_out="fc2",
    kv_heads_field=None,
    ffn_field="ffn_dim",
    attn_bias_flag="enable_bias",
    mlp_bias_flag="enable_bias",
    refresh=_refresh,
    stock_heads_ok=lambda config, heads: heads == config.num_attention_heads,
    allocation_follows_stock=False,
    stock_note="pruned heads or per-layer widths: OPTConfig describes only the original head count (its head "
               "size is hidden_size / num_attention_heads), so load the output with liar.load_pruned",
)
