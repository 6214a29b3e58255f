"""After structural pruning in another tool: write the new widths (and any bias LIAR added) into the stock config."""

from __future__ import annotations

from torch import nn

from liar.models.base import Architecture, ensure_bias


def bias_policy(arch: Architecture):
    """Which linears may gain a bias and still load in the stock config: those whose block has a bias flag."""
    def allowed(name: str, linear: nn.Linear) -> bool:
        kind = "attn" if ".self_attn." in name else "mlp" if ".mlp." in name else None
        return kind is not None and arch.bias_flag(kind) is not None
    return allowed


def _flag_biases(arch: Architecture, layers: nn.ModuleList, config) -> None:
    """A bias on any linear of a block kind switches the config flag on; the others get zero biases. Without a
    flag (Mistral, Qwen2) only the native biases are expressible: a consumer that gained one is refused."""
    for kind in ("attn", "mlp"):
        flag = arch.bias_flag(kind)
        if flag is None:
            consumer = arch.attn_consumer if kind == "attn" else arch.ffn_consumer
            if kind not in arch.native_bias and any(consumer(layer).bias is not None for layer in layers):
                raise ValueError(f"{arch.name}'s config cannot give the {kind} consumer a bias; use the bias-free "
                                 "variant (intercept=False / bias_allowed returning False) for a stock checkpoint")
            continue
        if not any(lin.bias is not None for layer in layers for lin in arch.linears(layer, kind).values()):
            continue
        setattr(config, flag, True)
        for layer in layers:
            for path in arch.linears(layer, kind):
                ensure_bias(layer, path)


def finalize_config(model, arch: Architecture) -> None:
    """Set hidden size, heads, KV heads, FFN width (uniform across layers) and bias flags from the modules."""
    config = model.config
    layers = arch.layer_list(model)
    head_dim = arch.head_dim(config)
    sizes = {arch.layer_sizes(layer, head_dim) for layer in layers}
    if len(sizes) != 1:
        raise ValueError(f"the pruned model has per-layer widths {sorted(s.to_dict().values() for s in sizes)}; "
                         "the stock config needs one width per kind: use local (not global) pruning")
    (uniform,) = sizes
    config.hidden_size = model.get_input_embeddings().weight.shape[1]
    arch.apply_sizes(config, uniform, head_dim)
    config.head_dim = head_dim
    _flag_biases(arch, layers, config)
    for layer in layers:
        arch.refresh_layer(layer, head_dim)
    try:
        type(config).from_dict(config.to_dict())
    except ValueError as e:
        raise ValueError(f"the pruned widths do not form a valid {type(config).__name__} ({e}); "
                         "choose round_to so the hidden size stays a multiple of the head count") from e
