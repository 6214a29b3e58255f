"""What the pipeline needs to know about an architecture, as one small declarative spec.

A new architecture is one file: an `Architecture` naming its decoder/encoder layer list, the attention
producers (q, k, v) and consumer (o), the FFN producers and consumer, the config fields that hold the
sizes, the config flags that switch biases on, and a hook that refreshes per-layer attributes after the
shapes change. Everything else (scoring, solving, slicing, export, loading) is generic.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class LayerSizes:
    """The widths of one layer: query heads, KV heads, FFN neurons (per expert in a mixture of experts; head_dim
    is fixed per model) and the number of experts (None: a dense FFN)."""

    num_heads: int
    num_kv_heads: int
    ffn: int
    experts: int | None = None

    def to_dict(self) -> dict[str, int]:
        sizes = {"num_attention_heads": self.num_heads, "num_key_value_heads": self.num_kv_heads,
                 "intermediate_size": self.ffn}
        return sizes if self.experts is None else {**sizes, "num_experts": self.experts}


@dataclass(frozen=True)
class MoeSpec:
    """A mixture-of-experts FFN whose experts are fused 3-D parameters (transformers 5: `gate_up_proj`
    [E, 2F, H] with every gate row then every up row per expert, `down_proj` [E, H, F]) behind a top-k
    router whose `weight` [E, H] holds one row per expert."""

    experts: str  # path of the experts module in a layer
    router: str  # path of the router module
    experts_field: str  # config field holding the number of experts
    saved_block: str  # the MoE block's name in a saved checkpoint ("block_sparse_moe" for Mixtral)
    saved_linears: tuple[str, str, str]  # per-expert gate, up, down linear names in a saved checkpoint


@dataclass(frozen=True)
class Architecture:
    name: str
    model_types: tuple[str, ...]
    layers: tuple[str, ...]  # dotted paths to the nn.ModuleList of blocks (task model first, then base model)
    q: str
    k: str
    v: str
    o: str
    ffn_in: tuple[str, ...]
    ffn_out: str
    heads_field: str = "num_attention_heads"
    kv_heads_field: str | None = "num_key_value_heads"  # None: plain multi-head attention
    ffn_field: str = "intermediate_size"
    attn_bias_flag: str | None = None  # config flag giving every attention linear a bias
    mlp_bias_flag: str | None = None  # config flag giving every FFN linear a bias
    native_bias: tuple[str, ...] = ()  # blocks ('attn', 'mlp') whose consumer always has a bias (BERT)
    refresh: Callable[[nn.Module, LayerSizes, int], None] | None = None  # (layer, sizes, head_dim)
    stock_heads_ok: Callable[[object, int], bool] | None = None  # (config, num_heads): can the stock config say it?
    allocation_follows_stock: bool = True  # uniform allocation picks only head counts the stock config can say
    encoder: bool = False  # calibrate on whole sentences padded per batch, not fixed-length token windows
    stock_note: str | None = None  # why an output is not stock-loadable, when the generic reason misleads
    # Producer row-map: a linear whose output rows stack several logical producers, in order (Phi-3's
    # qkv_proj = ("q", "k", "v"), gate_up_proj = ("ffn", "ffn")). Roles: "q", "k", "v" (attention), "ffn".
    fused: tuple[tuple[str, tuple[str, ...]], ...] = ()
    moe: MoeSpec | None = None  # the FFN is a mixture of experts (ffn_in / ffn_out unused)

    # ---- navigation -------------------------------------------------------------------------------
    def layer_list(self, model: nn.Module) -> nn.ModuleList:
        for path in self.layers:
            try:
                return model.get_submodule(path)
            except AttributeError:
                continue
        raise ValueError(f"{type(model).__name__} has none of the layer lists {self.layers} of {self.name}")

    def attn_producers(self, layer: nn.Module) -> dict[str, nn.Linear]:
        return {"q": layer.get_submodule(self.q), "k": layer.get_submodule(self.k), "v": layer.get_submodule(self.v)}

    def attn_consumer(self, layer: nn.Module) -> nn.Linear:
        return layer.get_submodule(self.o)

    def ffn_producers(self, layer: nn.Module) -> dict[str, nn.Linear]:
        return {path: layer.get_submodule(path) for path in self.ffn_in}

    def ffn_consumer(self, layer: nn.Module) -> nn.Linear:
        return layer.get_submodule(self.ffn_out)

    def producer_parts(self, kind: str) -> list[tuple[str, str]]:
        """(linear path, role) for every row segment of the block's producers, in row order per linear."""
        fused = dict(self.fused)
        paths = dict.fromkeys((self.q, self.k, self.v) if kind == "attn" else self.ffn_in)
        plain = {self.q: "q", self.k: "k", self.v: "v"} if kind == "attn" else {}
        return [(path, role) for path in paths for role in fused.get(path, (plain.get(path, "ffn"),))]

    @staticmethod
    def role_rows(role: str, sizes: LayerSizes, head_dim: int) -> int:
        return {"q": sizes.num_heads * head_dim, "k": sizes.num_kv_heads * head_dim,
                "v": sizes.num_kv_heads * head_dim}.get(role, sizes.ffn)

    def slice_producers(self, layer: nn.Module, kind: str, rows: dict[str, torch.Tensor], sizes: LayerSizes,
                        head_dim: int) -> None:
        """Keep rows[role] of every producer role; a fused linear keeps each segment's rows at its offset."""
        by_path: dict[str, list[torch.Tensor]] = {}
        offsets: dict[str, int] = {}
        for path, role in self.producer_parts(kind):
            start = offsets.get(path, 0)
            by_path.setdefault(path, []).append(rows[role] + start)
            offsets[path] = start + self.role_rows(role, sizes, head_dim)
        for path, pieces in by_path.items():
            slice_rows(layer, path, torch.cat(pieces))

    def linears(self, layer: nn.Module, kind: str) -> dict[str, nn.Linear]:
        """All linears of the attention ('attn') or FFN ('mlp') block, keyed by their path in the layer
        (none for a mixture of experts, whose weights are 3-D parameters)."""
        if kind == "mlp" and self.moe is not None:
            return {}
        paths = (self.q, self.k, self.v, self.o) if kind == "attn" else (*self.ffn_in, self.ffn_out)
        return {p: layer.get_submodule(p) for p in paths}

    def block_params(self, layer: nn.Module, kind: str) -> int:
        """Parameters of a block: its linears, or the experts and router of a mixture of experts."""
        if kind == "mlp" and self.moe is not None:
            return sum(p.numel() for p in layer.get_submodule(self.moe.experts.rpartition(".")[0]).parameters())
        return sum(lin.weight.numel() + (0 if lin.bias is None else lin.bias.numel())
                   for lin in self.linears(layer, kind).values())

    def experts_of(self, layer: nn.Module) -> nn.Module:
        try:
            return layer.get_submodule(self.moe.experts)
        except AttributeError:
            raise ValueError(f"{self.name}: a layer has a dense FFN where liar expects {self.moe.experts} (e.g. "
                             "Qwen3-MoE's mlp_only_layers); models mixing dense and expert layers are not "
                             "supported") from None

    def ffn_width(self, layer: nn.Module) -> int:
        """FFN neurons of a layer (per expert in a mixture of experts)."""
        if self.moe is not None:
            return self.experts_of(layer).down_proj.shape[-1]
        return self.ffn_consumer(layer).in_features

    def consumer_has_bias(self, layer: nn.Module, kind: str) -> bool:
        if kind == "mlp" and self.moe is not None:
            return False
        consumer = self.attn_consumer(layer) if kind == "attn" else self.ffn_consumer(layer)
        return consumer.bias is not None

    # ---- sizes ------------------------------------------------------------------------------------
    def head_dim(self, config) -> int:
        return getattr(config, "head_dim", None) or config.hidden_size // getattr(config, self.heads_field)

    def config_sizes(self, config) -> LayerSizes:
        heads = getattr(config, self.heads_field)
        kv = getattr(config, self.kv_heads_field, None) if self.kv_heads_field else None
        experts = None if self.moe is None else getattr(config, self.moe.experts_field)
        return LayerSizes(heads, kv or heads, getattr(config, self.ffn_field), experts)

    def layer_sizes(self, layer: nn.Module, head_dim: int) -> LayerSizes:
        """Read the sizes off the module shapes (the truth after pruning)."""
        heads = self.attn_consumer(layer).in_features // head_dim
        k_parts = [role for path, role in self.producer_parts("attn") if path == self.k]
        other_rows = sum(heads * head_dim for role in k_parts if role == "q")
        kv_rows = (layer.get_submodule(self.k).out_features - other_rows) // sum(r != "q" for r in k_parts)
        experts = None if self.moe is None else self.experts_of(layer).down_proj.shape[0]
        return LayerSizes(num_heads=heads, num_kv_heads=kv_rows // head_dim, ffn=self.ffn_width(layer), experts=experts)

    def apply_sizes(self, config, sizes: LayerSizes, head_dim: int) -> None:
        """Write uniform sizes into a config (the stock-loadable export)."""
        setattr(config, self.heads_field, sizes.num_heads)
        if self.kv_heads_field:
            setattr(config, self.kv_heads_field, sizes.num_kv_heads)
        setattr(config, self.ffn_field, sizes.ffn)
        if self.moe is not None:
            setattr(config, self.moe.experts_field, sizes.experts)
        if hasattr(config, "head_dim") or config.hidden_size != sizes.num_heads * head_dim:
            config.head_dim = head_dim

    def bias_flag(self, kind: str) -> str | None:
        return self.attn_bias_flag if kind == "attn" else self.mlp_bias_flag

    def stock_expresses_heads(self, config, num_heads: int) -> bool:
        return self.stock_heads_ok is None or self.stock_heads_ok(config, num_heads)

    def heads_ok(self, config, num_heads: int) -> bool:
        """Head counts uniform allocation may choose: the stock-expressible ones, unless the architecture opts
        out (BERT's config can say only the original count, which would forbid head pruning)."""
        return not self.allocation_follows_stock or self.stock_expresses_heads(config, num_heads)

    def refresh_layer(self, layer: nn.Module, head_dim: int) -> None:
        if self.refresh is not None:
            self.refresh(layer, self.layer_sizes(layer, head_dim), head_dim)


def set_linear(layer: nn.Module, path: str, weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    """Replace the linear at `path` with one holding exactly `weight` [out, in] and `bias` [out] (or none)."""
    old = layer.get_submodule(path)
    new = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device="meta", dtype=weight.dtype)
    new.weight = nn.Parameter(weight.detach().contiguous(), requires_grad=old.weight.requires_grad)
    if bias is not None:
        new.bias = nn.Parameter(bias.detach().contiguous(), requires_grad=old.weight.requires_grad)
    parent, _, name = path.rpartition(".")
    setattr(layer.get_submodule(parent) if parent else layer, name, new)
    return new


def slice_rows(layer: nn.Module, path: str, rows: torch.Tensor) -> None:
    """Keep only the output rows `rows` of a producer linear (and of its bias)."""
    lin = layer.get_submodule(path)
    rows = rows.to(lin.weight.device)
    bias = None if lin.bias is None else lin.bias.index_select(0, rows)
    set_linear(layer, path, lin.weight.index_select(0, rows), bias)


def ensure_bias(layer: nn.Module, path: str) -> None:
    """Give a linear a zero bias if it has none (for configs whose bias flag covers several linears)."""
    lin = layer.get_submodule(path)
    if lin.bias is None:
        set_linear(layer, path, lin.weight, torch.zeros(lin.out_features, dtype=lin.weight.dtype,
                                                         device=lin.weight.device))
