"""How a pruned model is described, decided before pruning from the budgets (the export plan).

Uniform widths (and biases the config can express) → the stock config with the new sizes: plain
`transformers` loads it. Otherwise the base config plus `liar_layer_sizes`, under model_type
"liar_pruned" so that stock transformers refuses it instead of silently re-initializing weights; it is
loaded by `liar.load_pruned`. The files themselves are written by liar.io.writer.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from liar.io.load import LAYER_SIZES_KEY
from liar.models.base import Architecture, LayerSizes, ensure_bias

REPORT_NAME = "liar_report.json"


@dataclass(frozen=True)
class ExportPlan:
    """How the pruned model is described: stock config (uniform, expressible) or liar's per-layer format."""

    stock: bool
    sizes: list[LayerSizes]
    bias_flags: dict[str, str]  # block kind -> config flag switched on (its linears all get a bias)


def plan_export(arch: Architecture, config, sizes: list[LayerSizes], consumer_bias: dict[str, bool]) -> ExportPlan:
    """consumer_bias[kind]: does any pruned layer's consumer of that block carry a bias."""
    uniform = len(set(sizes)) == 1 and arch.stock_expresses_heads(config, sizes[0].num_heads)
    flags, expressible = {}, True
    for kind in ("attn", "mlp"):
        flag = arch.bias_flag(kind)
        already = kind in arch.native_bias or (flag is not None and getattr(config, flag, False))
        if consumer_bias[kind] and not already:
            expressible &= flag is not None
            if flag is not None:
                flags[kind] = flag
    stock = uniform and expressible
    return ExportPlan(stock=stock, sizes=sizes, bias_flags=flags if stock else {})


def add_flagged_biases(arch: Architecture, layer: nn.Module, plan: ExportPlan) -> None:
    """A switched-on config flag gives every linear of its block a bias: zeros where there was none."""
    switched = set(plan.bias_flags.values())  # one flag may cover both blocks (OPT's enable_bias)
    for kind in ("attn", "mlp"):
        if arch.bias_flag(kind) not in switched:
            continue
        for path in arch.linears(layer, kind):
            ensure_bias(layer, path)


def apply_plan(arch: Architecture, config, plan: ExportPlan, head_dim: int) -> None:
    config.head_dim = head_dim
    if plan.stock:
        arch.apply_sizes(config, plan.sizes[0], head_dim)
        for flag in plan.bias_flags.values():
            setattr(config, flag, True)
        config.__dict__.pop(LAYER_SIZES_KEY, None)
    else:
        setattr(config, LAYER_SIZES_KEY, [s.to_dict() for s in plan.sizes])


def export_note(arch: Architecture) -> str:
    """Why an output is not stock-loadable, for the report."""
    return arch.stock_note or ("per-layer widths, or biases the stock config cannot carry: load the output with "
                               "liar.load_pruned (use --allocation uniform and/or --no-bias for a stock checkpoint)")


def block_linear_params(arch: Architecture, layer: nn.Module) -> int:
    """Attention + FFN parameters of one block (what `ratio` counts; experts' fused weights included)."""
    return sum(arch.block_params(layer, kind) for kind in ("attn", "mlp"))
