"""Materialize one block (decoder or encoder layer) from checkpoint tensors, with the shapes as saved."""

from __future__ import annotations

import torch
from torch import nn

from liar.io import experts
from liar.io.shards import ShardReader
from liar.models.base import Architecture, set_linear


def load_block(
    arch: Architecture, layer: nn.Module, prefix: str, reader: ShardReader, dtype: torch.dtype | None,
    device: torch.device | str, head_dim: int,
) -> nn.Module:
    """Set every parameter of `layer` from `reader` under `prefix` (device "meta": shapes only, no reads).

    Block linears are rebuilt at the checkpoint's shapes (a pruned checkpoint may be narrower than its
    base config) and get a bias exactly when the checkpoint has one; other parameters are assigned.
    """

    on_meta = torch.device(device).type == "meta"

    def fetch(name: str) -> torch.Tensor:
        t = reader.meta(prefix + name) if on_meta else reader.get(prefix + name)
        # A private copy, never a view of the memory-mapped file: once the reader closes, the file pages
        # leave this process, and each weight is released as soon as pruning replaces it.
        return t.to(device=device, dtype=dtype if dtype is not None and t.is_floating_point() else t.dtype,
                    copy=not on_meta)

    def fetch_param(name: str) -> torch.Tensor:
        if arch.moe is None or not experts.is_fused(arch.moe, name):
            return fetch(name)
        # Checkpoints store one linear per expert (see liar.io.experts): fused here, per tensor as stored.
        return experts.read_fused(arch.moe, name, fetch, lambda key: f"{prefix}{key}" in reader)

    linears = {sub for kind in ("attn", "mlp") for sub in arch.linears(layer, kind)}
    for sub in linears:
        bias = fetch(f"{sub}.bias") if f"{prefix}{sub}.bias" in reader else None
        set_linear(layer, sub, fetch(f"{sub}.weight"), bias)
    for mod_name, module in layer.named_modules():
        if mod_name in linears:
            continue
        for pname, param in list(module.named_parameters(recurse=False)):
            name = f"{mod_name}.{pname}" if mod_name else pname
            module._parameters[pname] = nn.Parameter(fetch_param(name), requires_grad=param.requires_grad)
    if torch.device(device).type != "meta" and any(b.is_meta for b in layer.buffers()):
        raise NotImplementedError(f"{type(layer).__name__} keeps buffers liar cannot rebuild from a checkpoint")
    arch.refresh_layer(layer, head_dim)
    return layer


def block_prefix(reader: ShardReader, arch: Architecture) -> str:
    """The checkpoint's name prefix of the block list, e.g. 'model.layers.'."""
    for path in arch.layers:
        if f"{path}.0." in {k[: len(path) + 3] for k in reader.keys()}:
            return f"{path}."
    raise ValueError(f"the checkpoint has no tensors under any of {arch.layers}")
