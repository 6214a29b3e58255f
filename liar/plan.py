"""`liar prune --dry-run`: what a run would keep, how large the result would be and what it would hold in
memory, read off the checkpoint's shapes alone (the model is built on the meta device: no weight is read).

Uniform and depth allocations depend only on the shapes, so their plans are exact. Global and error allocations
score units on calibration data: without a calibration pass only the uniform plan at the same ratio can be shown.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from liar.activations import activation_bytes
from liar.allocation import Budget, sizes_after
from liar.config import PruneConfig
from liar.io.export import plan_export
from liar.models.base import Architecture, LayerSizes
from liar.pipeline import uniform_budgets
from liar.ranges import to_ranges
from liar.structure import LayerShape


@dataclass(frozen=True)
class LayerPlan:
    index: int
    before: LayerSizes
    after: LayerSizes
    params_before: int  # attention + FFN linears (weights and biases)
    params_after: int


@dataclass(frozen=True)
class Plan:
    layers: list[LayerPlan]
    params_before: int  # whole model
    params_after: int
    stock_loadable: bool
    exact: bool  # False: a scored allocation (global, error), the uniform plan at the same ratio is shown instead
    activation_bytes: int
    block_bytes: int  # the largest block's weights in the compute dtype
    statistics_bytes: int  # fp32 Gram statistics of one block's two consumers

    @property
    def block_params_before(self) -> int:
        return sum(l.params_before for l in self.layers)

    @property
    def block_params_after(self) -> int:
        return sum(l.params_after for l in self.layers)

    def to_dict(self) -> dict:
        return {**asdict(self), "block_params_before": self.block_params_before,
                "block_params_after": self.block_params_after}


def adds_bias(config: PruneConfig) -> bool:
    """Does reconstruction give a pruned consumer a bias (FLAP's mean compensation, LIAR's intercept)?"""
    return config.reconstruct == "bias" or (config.reconstruct == "liar" and config.intercept)


def consumer_bias(arch: Architecture, layers: list[nn.Module], budgets: list[Budget], config: PruneConfig
                  ) -> dict[str, bool]:
    """Will any consumer of each block kind carry a bias after pruning (see liar.functional.reconstruct)?"""
    adds = adds_bias(config)
    pairs = list(zip(layers, budgets, strict=True))
    return {"attn": any(arch.consumer_has_bias(l, "attn") or (adds and b.attn_units > 0) for l, b in pairs),
            "mlp": any(arch.consumer_has_bias(l, "mlp") or (adds and b.neurons > 0 and arch.moe is None)
                       for l, b in pairs)}


def _biases_added(arch: Architecture, layer: nn.Module, after: LayerSizes, head_dim: int, budget: Budget,
                  flagged: set[str], adds: bool) -> int:
    """Bias entries a block gains: its consumers' new intercepts, and zeros for every linear of a block whose
    config flag the export switches on (see liar.io.export.add_flagged_biases)."""
    out_after = {arch.q: after.num_heads * head_dim, arch.k: after.num_kv_heads * head_dim,
                 arch.v: after.num_kv_heads * head_dim, **{p: after.ffn for p in arch.ffn_in}}
    removed = {"attn": budget.attn_units > 0, "mlp": budget.neurons > 0}
    consumer = {"attn": arch.o, "mlp": arch.ffn_out}
    added = 0
    for kind in ("attn", "mlp"):
        for path, lin in arch.linears(layer, kind).items():
            gains = kind in flagged or (path == consumer[kind] and adds and removed[kind])
            if lin.bias is None and gains:
                added += out_after.get(path, lin.out_features)
    return added


def plan_layers(arch: Architecture, layers: list[nn.Module], shapes: list[LayerShape], budgets: list[Budget],
                config: PruneConfig, flagged: set[str]) -> list[LayerPlan]:
    plans = []
    for i, (layer, shape, budget) in enumerate(zip(layers, shapes, budgets, strict=True)):
        after = sizes_after(shape, budget, config.gqa)
        params_after = (shape.block_params - budget.removed_params(shape, config.gqa)
                        + _biases_added(arch, layer, after, shape.head_dim, budget, flagged, adds_bias(config)))
        plans.append(LayerPlan(i, shape.sizes, after, shape.block_params, params_after))
    return plans


def make_plan(arch: Architecture, model_config, layers: list[nn.Module], head_dim: int, config: PruneConfig,
              params_before: int, dtype: torch.dtype) -> Plan:
    """The plan of a run over `layers` (modules with the checkpoint's shapes, e.g. on the meta device)."""
    exact = config.allocation in ("uniform", "depth")
    uniform = config if exact else config.replace(allocation="uniform")
    shapes = [LayerShape.of(arch, layer, head_dim) for layer in layers]
    budgets = uniform_budgets(arch, model_config, shapes, uniform)
    sizes = [sizes_after(s, b, config.gqa) for s, b in zip(shapes, budgets, strict=True)]
    export = plan_export(arch, model_config, sizes, consumer_bias(arch, layers, budgets, config))
    rows = plan_layers(arch, layers, shapes, budgets, config, set(export.bias_flags))
    tokens = config.nsamples * config.seqlen
    ffn = max(s.sizes.ffn for s in shapes)
    attn_in = max(s.sizes.num_heads * head_dim for s in shapes)
    block = max(sum(p.numel() for p in layer.parameters()) for layer in layers)
    gram = 4 * (attn_in**2 + ffn**2)
    if config.calibration == "sequential":  # + Σ y x_sᵀ, [hidden, D] per consumer
        gram += 4 * model_config.hidden_size * (attn_in + ffn)
    if config.alpha == "auto":  # two folds, and their sum while a consumer is solved
        gram = 4 * (2 * (attn_in**2 + ffn**2) + max(attn_in, ffn) ** 2)
    return Plan(
        layers=rows, params_before=params_before,
        params_after=params_before - sum(r.params_before - r.params_after for r in rows),
        stock_loadable=export.stock and exact, exact=exact,
        activation_bytes=activation_bytes(tokens, model_config.hidden_size, ffn, dtype,
                                          config.calibration == "sequential"),
        block_bytes=block * dtype.itemsize, statistics_bytes=gram,
    )


def _mib(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB"


def _sizes(s: LayerSizes) -> str:
    return f"heads {s.num_heads} (KV {s.num_kv_heads}), neurons {s.ffn}"


def render(plan: Plan, source: str, config: PruneConfig, dtype: torch.dtype, device: torch.device) -> str:
    lines = [f"plan for {source}: ratio {config.ratio}, {config.criterion}/{config.reconstruct}, "
             f"{config.allocation} allocation, gqa {config.gqa}"]
    if not plan.exact:
        lines.append(f"  {config.allocation} allocation scores units on calibration data, so its per-layer plan needs the "
                     "calibration pass; shown instead: the uniform plan at the same ratio (same parameter total "
                     "within one unit per layer)")
    groups: dict[tuple, list[int]] = {}
    for row in plan.layers:
        groups.setdefault((row.before, row.after), []).append(row.index)
    for (before, after), indices in groups.items():
        lines.append(f"  layers {to_ranges(indices)}: {_sizes(before)} -> {_sizes(after)}")
    lines += [
        f"  parameters: {plan.params_before:,} -> {plan.params_after:,} "
        f"(blocks -{1 - plan.block_params_after / plan.block_params_before:.1%}, "
        f"whole model -{1 - plan.params_after / plan.params_before:.1%})",
        f"  memory ({str(dtype).removeprefix('torch.')} on {device}): calibration activations "
        f"{_mib(plan.activation_bytes)} ({config.nsamples} x {config.seqlen} tokens, --offload {config.offload}), "
        f"one block's weights {_mib(plan.block_bytes)} (up to three held at once: one read ahead, one being written; "
        f"one with --no-overlap), Gram statistics {_mib(plan.statistics_bytes)}",
        "  output: " + ("stock-loadable (transformers' from_pretrained reads it)" if plan.stock_loadable else
                        "liar_pruned format (per-layer widths or biases the stock config cannot carry; "
                        "load with liar.load_pruned)"),
        "  dry run: nothing was calibrated or written",
    ]
    return "\n".join(lines)


def meta_layers(source: Path):
    """(architecture, model config, blocks on the meta device at the checkpoint's shapes, head_dim, total
    parameters in the checkpoint): only config.json and the safetensors headers are read."""
    from liar.io.blocks import block_prefix, load_block
    from liar.io.load import model_class, read_config
    from liar.io.shards import ShardReader
    from liar.models import architecture_for

    model_config, _ = read_config(source)
    with torch.device("meta"):
        model = model_class(model_config)(model_config)
    arch = architecture_for(model)
    reader = ShardReader(source)
    prefix, head_dim = block_prefix(reader, arch), arch.head_dim(model_config)
    layers = list(arch.layer_list(model))
    for i, layer in enumerate(layers):
        load_block(arch, layer, f"{prefix}{i}.", reader, None, "meta", head_dim)
    params = sum(reader.meta(k).numel() for k in reader.keys())
    reader.close()
    return arch, model_config, layers, head_dim, params


def print_plan(model: str | None, config: PruneConfig) -> dict:
    """The driver of `liar prune --dry-run`: prints the plan and returns it as a dict."""
    from liar.devices import resolve_device, resolve_dtype
    from liar.io.load import resolve_source

    source = resolve_source(model)
    device = resolve_device(config.device)
    dtype = resolve_dtype(config.dtype, device)
    arch, model_config, layers, head_dim, params = meta_layers(source)
    plan = make_plan(arch, model_config, layers, head_dim, config, params, dtype)
    print(render(plan, str(source), config, dtype, device))
    return plan.to_dict()
