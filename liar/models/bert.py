"""BERT family: BertModel, BertForSequenceClassification and the other Bert* heads (MiniLM is one).

Plain multi-head attention: a head is its query/key/value rows (with their biases) and its input columns
of attention.output.dense; a neuron is an intermediate.dense row (with its bias) and an output.dense
column. Every BERT linear has a bias, so LIAR's intercept lands in the existing output biases.

Export: transformers' BertSelfAttention derives its head size as hidden_size / num_attention_heads and
BertConfig has no head_dim, so a stock BertConfig can only describe the original head count (8 of
MiniLM's 12 heads would read as a head size of 48, 7 heads raise). Head-pruned checkpoints are therefore
written in liar's per-layer format (`liar.load_pruned`); FFN-only pruning stays stock-loadable. Allocation
is not bound to stock head counts, since that would forbid head pruning altogether.
"""

from __future__ import annotations

from torch import nn

from liar.models.base import Architecture, LayerSizes


def _refresh(layer: nn.Module, sizes: LayerSizes, head_dim: int) -> None:
    # The forward reshapes by attention_head_size alone; the two counts are kept true for readers.
    attn = layer.attention.self
    attn.num_attention_heads = sizes.num_heads
    attn.attention_head_size = head_dim
    attn.all_head_size = sizes.num_heads * head_dim


BERT = Architecture(
    name="bert",
    model_types=("bert",),
    layers=("bert.encoder.layer", "encoder.layer"),
    q="attention.self.query",
    k="attention.self.key",
    v="attention.self.value",
    o="attention.output.dense",
    ffn_in=("intermediate.dense",),
    ffn_out="output.dense",
    kv_heads_field=None,
    native_bias=("attn", "mlp"),
    refresh=_refresh,
    stock_heads_ok=lambda config, heads: heads == config.num_attention_heads,
    allocation_follows_stock=False,
    encoder=True,
    stock_note="pruned heads or per-layer widths: BertConfig describes only the original head count (its head "
               "size is hidden_size / num_attention_heads), so load the output with liar.load_pruned",
)
