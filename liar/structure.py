"""Prunable units of a layer and which channels they own.

Attention is pruned in *units* that keep K/V consistent under grouped-query attention:
- per-group: a unit is a "slot" — removing slot j removes the j-th least important query head of every
  KV group, so every group keeps the same number of query heads and the stock config still describes it;
- whole-groups: a unit is a KV group — its K/V heads and all its query heads.
With plain multi-head attention (one query head per KV head) both modes mean pruning heads with their K/V.
The FFN is pruned in neurons.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from liar.models.base import Architecture, LayerSizes


def _params(lin: nn.Linear) -> int:
    return lin.weight.numel() + (0 if lin.bias is None else lin.bias.numel())


def _row_cost(lin: nn.Linear) -> int:
    return lin.in_features + (0 if lin.bias is None else 1)


@dataclass(frozen=True)
class LayerShape:
    """Sizes and parameter costs of one layer's prunable units (read off its modules)."""

    sizes: LayerSizes
    head_dim: int
    head_cost: int  # one query head: its q rows and its o columns
    kv_cost: int  # one KV head: its k and v rows
    neuron_cost: int  # one FFN neuron: its producer rows and its consumer column
    attn_params: int
    ffn_params: int

    @classmethod
    def of(cls, arch: Architecture, layer: nn.Module, head_dim: int) -> LayerShape:
        p, o = arch.attn_producers(layer), arch.attn_consumer(layer)
        if arch.moe is not None:
            down = arch.experts_of(layer).down_proj  # [E, H, F]; a neuron: 2 rows + 1 column each
            neuron_cost = 3 * down.shape[0] * down.shape[1]
        else:
            ffn_rows = [layer.get_submodule(path) for path, _ in arch.producer_parts("mlp")]  # a fused linear each
            neuron_cost = sum(_row_cost(lin) for lin in ffn_rows) + arch.ffn_consumer(layer).out_features
        return cls(
            sizes=arch.layer_sizes(layer, head_dim),
            head_dim=head_dim,
            head_cost=head_dim * (_row_cost(p["q"]) + o.out_features),
            kv_cost=head_dim * (_row_cost(p["k"]) + _row_cost(p["v"])),
            neuron_cost=neuron_cost,
            attn_params=arch.block_params(layer, "attn"),
            ffn_params=arch.block_params(layer, "mlp"),
        )

    @property
    def group_size(self) -> int:
        return self.sizes.num_heads // self.sizes.num_kv_heads

    @property
    def block_params(self) -> int:
        return self.attn_params + self.ffn_params

    def attn_mode(self, gqa: str) -> str:
        """per-group needs more than one query head per KV group; otherwise heads go with their K/V."""
        return "per-group" if gqa == "per-group" and self.group_size > 1 else "whole-groups"

    def attn_units(self, gqa: str) -> int:
        return self.group_size if self.attn_mode(gqa) == "per-group" else self.sizes.num_kv_heads

    def attn_unit_cost(self, gqa: str) -> int:
        if self.attn_mode(gqa) == "per-group":
            return self.sizes.num_kv_heads * self.head_cost
        return self.group_size * self.head_cost + self.kv_cost

    def heads_after(self, gqa: str, units_removed: int) -> int:
        if self.attn_mode(gqa) == "per-group":
            return self.sizes.num_kv_heads * (self.group_size - units_removed)
        return self.group_size * (self.sizes.num_kv_heads - units_removed)

    def min_attn_units(self, gqa: str, min_keep: float) -> int:
        """Attention units every layer keeps (at least one, so no layer loses all its heads)."""
        return max(1, math.ceil(min_keep * self.attn_units(gqa)))

    def min_neurons(self, min_keep: float) -> int:
        return max(1, math.ceil(min_keep * self.sizes.ffn))


@dataclass(frozen=True)
class AttnPlan:
    kept_heads: torch.Tensor  # sorted query-head indices (grouped by KV group)
    kept_kv: torch.Tensor  # sorted KV-head indices

    def channels(self, head_dim: int) -> torch.Tensor:
        return heads_to_channels(self.kept_heads, head_dim)


def heads_to_channels(heads: torch.Tensor, head_dim: int) -> torch.Tensor:
    return (heads[:, None] * head_dim + torch.arange(head_dim)).reshape(-1)


def complement(kept: torch.Tensor, n: int) -> torch.Tensor:
    mask = torch.ones(n, dtype=torch.bool)
    mask[kept] = False
    return mask.nonzero().squeeze(1)


def attn_unit_scores(head_scores: torch.Tensor, shape: LayerShape, gqa: str) -> torch.Tensor:
    """One score per attention unit (ascending = pruned first): slots in per-group mode, groups otherwise."""
    groups = head_scores.reshape(shape.sizes.num_kv_heads, shape.group_size)
    if shape.attn_mode(gqa) == "per-group":
        return groups.sort(dim=1).values.mean(dim=0)  # slot j: mean of every group's j-th weakest head
    return groups.mean(dim=1)


def select_heads(head_scores: torch.Tensor, shape: LayerShape, gqa: str, units_removed: int) -> AttnPlan:
    """Keep the strongest heads, `units_removed` attention units fewer, respecting the GQA mode."""
    n_kv, g = shape.sizes.num_kv_heads, shape.group_size
    groups = head_scores.reshape(n_kv, g)
    if shape.attn_mode(gqa) == "per-group":
        keep = g - units_removed
        top = groups.topk(keep, dim=1).indices.sort(dim=1).values
        kept_heads = (top + torch.arange(n_kv)[:, None] * g).reshape(-1)
        return AttnPlan(kept_heads=kept_heads, kept_kv=torch.arange(n_kv))
    kept_kv = groups.mean(dim=1).topk(n_kv - units_removed).indices.sort().values
    kept_heads = (kept_kv[:, None] * g + torch.arange(g)).reshape(-1)
    return AttnPlan(kept_heads=kept_heads, kept_kv=kept_kv)


def select_neurons(scores: torch.Tensor, removed: int) -> torch.Tensor:
    return scores.topk(scores.numel() - removed).indices.sort().values
