"""Mixture-of-experts families: MixtralForCausalLM and Qwen3MoeForCausalLM (transformers 5 layout).

Attention as in LLaMA / Qwen3 (GQA; Qwen3-MoE adds q_norm / k_norm over head_dim, kept whole). The FFN is a
sparse block `mlp` with a top-k router `mlp.gate` (weight [E, H]) and fused 3-D experts `mlp.experts`
(gate_up_proj [E, 2F, H], down_proj [E, H, F]); liar.moe prunes the same number of neurons in every expert
(one width for the fused tensors), each expert chosen and reconstructed on its own routed tokens, and can
drop whole experts (PruneConfig.expert_ratio). The router is untouched except for dropped experts' rows.

Export: expert neurons are reconstructed without intercept (experts carry no bias), so the FFN never needs
a bias. Mixtral's config has no attention-bias flag: LIAR's attention intercept needs `liar.load_pruned`,
the no-intercept variant is stock. Qwen3-MoE's `attention_bias` carries it: uniform outputs are stock.
Layers listed in Qwen3-MoE's `mlp_only_layers` (dense FFNs) are not supported.
"""

from __future__ import annotations

import dataclasses

from torch import nn

from liar.models.base import LayerSizes, MoeSpec
from liar.models.llama import LLAMA


def _refresh(layer: nn.Module, sizes: LayerSizes, head_dim: int) -> None:
    layer.self_attn.num_key_value_groups = sizes.num_heads // sizes.num_kv_heads
    experts, router = layer.mlp.experts, layer.mlp.gate
    experts.num_experts = router.num_experts = experts.down_proj.shape[0]
    experts.intermediate_dim = experts.down_proj.shape[-1]


_MOE = dict(ffn_in=(), ffn_out="mlp.experts", mlp_bias_flag=None, stock_heads_ok=None, refresh=_refresh)
MIXTRAL = dataclasses.replace(LLAMA, name="mixtral", model_types=("mixtral",), attn_bias_flag=None,
                              moe=MoeSpec("mlp.experts", "mlp.gate", "num_local_experts", "block_sparse_moe",
                                          ("w1", "w3", "w2")), **_MOE)
QWEN3_MOE = dataclasses.replace(LLAMA, name="qwen3_moe", model_types=("qwen3_moe",),
                                ffn_field="moe_intermediate_size",
                                moe=MoeSpec("mlp.experts", "mlp.gate", "num_experts", "mlp",
                                            ("gate_proj", "up_proj", "down_proj")), **_MOE)
