"""Fused experts in memory, one linear per expert on disk.

transformers 5 holds a mixture of experts as fused 3-D parameters (`experts.gate_up_proj` [E, 2F, H],
`experts.down_proj` [E, H, F]) but `save_pretrained` writes, and `from_pretrained` expects, the released
layout: one gate / up / down linear per expert (Mixtral: `block_sparse_moe.experts.{e}.w1|w3|w2.weight`,
Qwen3-MoE: `mlp.experts.{e}.gate_proj|up_proj|down_proj.weight`) and the router under the same block. These
two functions translate one block's tensors both ways, so streaming reads and writes what stock transformers
reads and writes.
"""

from __future__ import annotations

import torch

from liar.models.base import MoeSpec


def _names(spec: MoeSpec) -> dict[str, str]:
    block = spec.experts.rpartition(".")[0]  # the MoE block in the module tree, e.g. "mlp"
    return {"block": block, "gate_up": f"{spec.experts}.gate_up_proj", "down": f"{spec.experts}.down_proj",
            "router": f"{spec.router}.weight", "saved_router": f"{spec.saved_block}.gate.weight"}


def is_fused(spec: MoeSpec, name: str) -> bool:
    """Is `name` (a parameter path inside a block) one the checkpoint stores differently?"""
    n = _names(spec)
    return name in (n["gate_up"], n["down"], n["router"])


def read_fused(spec: MoeSpec, name: str, fetch, contains) -> torch.Tensor:
    """The fused parameter `name` assembled from the per-expert checkpoint tensors; `fetch(key)` reads one
    tensor of the block (or its meta), `contains(key)` says whether the block has it."""
    n = _names(spec)
    if name == n["router"]:
        return fetch(n["saved_router"])
    gate, up, down = spec.saved_linears
    expert = f"{spec.saved_block}.experts.{{}}.{{}}.weight"
    count = 0
    while contains(expert.format(count, down)):
        count += 1
    if count == 0:
        raise KeyError(f"no experts under {spec.saved_block}.experts in the checkpoint")
    if name == n["down"]:
        return torch.stack([fetch(expert.format(e, down)) for e in range(count)])
    return torch.stack([torch.cat([fetch(expert.format(e, gate)), fetch(expert.format(e, up))])
                        for e in range(count)])


def to_saved(spec: MoeSpec, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """One block's state dict (names relative to the block) with the fused experts split per expert."""
    n = _names(spec)
    out = {k: v for k, v in tensors.items() if k not in (n["gate_up"], n["down"], n["router"])}
    gate, up, down = spec.saved_linears
    gate_up, down_w = tensors[n["gate_up"]], tensors[n["down"]]
    width = down_w.shape[-1]
    for e in range(down_w.shape[0]):
        out[f"{spec.saved_block}.experts.{e}.{gate}.weight"] = gate_up[e, :width].contiguous()
        out[f"{spec.saved_block}.experts.{e}.{up}.weight"] = gate_up[e, width:].contiguous()
        out[f"{spec.saved_block}.experts.{e}.{down}.weight"] = down_w[e].contiguous()
    out[n["saved_router"]] = tensors[n["router"]]
    return out
