"""Qwen3 family: Qwen3ForCausalLM (and its base model).

LLaMA's module layout plus q_norm / k_norm, RMSNorms over head_dim whose weights every head shares: head
pruning keeps them whole (they never index heads). Qwen3Config's `attention_bias` gives q/k/v/o a bias,
so LIAR's attention intercept travels in a stock checkpoint; there is no flag for a down_proj bias, so an
FFN intercept needs `liar.load_pruned` (or the no-intercept variant, which stays stock-loadable).
"""

from __future__ import annotations

import dataclasses

from liar.models.llama import LLAMA

QWEN3 = dataclasses.replace(LLAMA, name="qwen3", model_types=("qwen3",), mlp_bias_flag=None, stock_heads_ok=None)
