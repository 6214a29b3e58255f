"""Gemma 3 text family: Gemma3ForCausalLM (model_type gemma3_text).

LLaMA's module names with sandwich norms: o_proj and down_proj outputs pass post_attention_layernorm /
post_feedforward_layernorm before the residual add. The reconstruction targets the consumer's own output
(before that norm), which is what the block computes next from it, so nothing changes for the solve.
q_norm / k_norm act on head_dim and are shared by heads (kept whole); GeGLU (gate/up/down); the tied,
sqrt(hidden)-scaled embedding is outside the blocks and untouched. `attention_bias` covers q/k/v/o; no
flag covers down_proj, so an FFN intercept needs `liar.load_pruned` (the no-intercept variant is stock).
Gemma3TextConfig checks hidden_size % num_attention_heads == 0 even with an explicit head_dim.
"""

from __future__ import annotations

import dataclasses

from liar.models.llama import LLAMA

GEMMA3 = dataclasses.replace(LLAMA, name="gemma3", model_types=("gemma3_text",), mlp_bias_flag=None)
