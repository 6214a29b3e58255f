"""Make a transformers LLaMA-family model traceable by Torch-Pruning's dependency graph.

Torch-Pruning 1.6.1 never finishes building its graph for transformers-5 LLaMA models (measured here:
still in `_fix_dependency_graph_non_recursive` after 100 s on a 1-layer, 48-wide model; upstream
VainF/Torch-Pruning#527): the slice + concat of RoPE's `rotate_half` maps head channels onto shifted
indices forever. Head pruning never splits a head, so RoPE acts on each head's channels in place; tracing
it as one opaque elementwise op is exact for what is pruned and lets the graph build in 0.1 s. Eager
attention is used while tracing because TP's GQA bookkeeping follows `repeat_kv`, not fused SDPA.
"""

from __future__ import annotations

import contextlib
import importlib

import torch

ROPE_MODULES = ("llama", "mistral", "qwen2")


class _RotateHalf(torch.autograd.Function):
    """rotate_half(x) = cat(-x₂, x₁) over the last dim, as one graph node."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        half = x.shape[-1] // 2
        return torch.cat((-x[..., half:], x[..., :half]), dim=-1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        half = grad.shape[-1] // 2
        return torch.cat((grad[..., half:], -grad[..., :half]), dim=-1)


@contextlib.contextmanager
def traceable(model):
    """Within the block, RoPE is one node and attention is eager; both are restored afterwards."""
    modules = [importlib.import_module(f"transformers.models.{name}.modeling_{name}") for name in ROPE_MODULES]
    saved = [m.rotate_half for m in modules]
    attn = model.config._attn_implementation
    try:
        for m in modules:
            m.rotate_half = _RotateHalf.apply
        model.set_attn_implementation("eager")
        yield model
    finally:
        for m, fn in zip(modules, saved, strict=True):
            m.rotate_half = fn
        model.set_attn_implementation(attn)
