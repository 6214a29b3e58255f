"""Prune one block given its statistics and budget: score, select, reconstruct, slice."""

from __future__ import annotations

import torch
from torch import nn

from liar import damping, moe, selection
from liar.allocation import Budget
from liar.config import PruneConfig
from liar.functional import reconstruct, reconstruct_sequential
from liar.models.base import Architecture, set_linear
from liar.report import LayerReport, ModuleReport
from liar.stats import CrossStats, FoldedStats, GramStats
from liar.structure import LayerShape, complement, heads_to_channels

SOLVE_DTYPES = {"float32": torch.float32, "float64": torch.float64}
Stats = GramStats | FoldedStats | CrossStats


def _own(stats: Stats) -> GramStats:
    """The moments of the inputs the pruned layer will see (what criteria score)."""
    if isinstance(stats, FoldedStats):
        return stats.total()
    return stats.student if isinstance(stats, CrossStats) else stats


def _reconstruct_consumer(
    layer: nn.Module, path: str, stats: Stats, kept_channels: torch.Tensor, config: PruneConfig,
    report: ModuleReport,
) -> None:
    """Replace the consumer at `path` with its reconstruction on `kept_channels`; fill the report."""
    consumer = layer.get_submodule(path)
    report.tokens = stats.n
    if kept_channels.numel() == consumer.in_features:
        report.errors = {"none": 0.0, "bias": 0.0, "liar": 0.0}
        return
    alpha = config.alpha
    if isinstance(stats, FoldedStats):  # alpha='auto': choose it on the folds, then solve on all tokens
        pruned = complement(kept_channels.cpu(), consumer.in_features)
        choice = damping.choose_alpha(stats.folds, consumer.weight, consumer.bias, kept_channels, pruned,
                                      config.intercept, SOLVE_DTYPES[config.solve_dtype])
        alpha, report.alpha_heldout = choice.alpha, {f"{a:.3g}": e for a, e in choice.heldout.items()}
        stats = stats.total()
    report.alpha = alpha
    common = dict(mode=config.reconstruct, alpha=alpha, intercept=config.intercept,
                  solve_dtype=SOLVE_DTYPES[config.solve_dtype])
    if isinstance(stats, CrossStats):
        r = reconstruct_sequential(stats, consumer.weight, consumer.bias, kept_channels, **common)
    else:
        r = reconstruct(stats, consumer.weight, consumer.bias, kept_channels, backend=config.backend, **common)
    set_linear(layer, path, r.weight, r.bias)
    report.errors = r.errors
    if r.info is not None:
        report.lam, report.escalations, report.fallback = r.info.lam, r.info.escalations, r.info.fallback


def prune_attention(
    arch: Architecture, layer: nn.Module, shape: LayerShape, stats: Stats, units_removed: int,
    config: PruneConfig, gen: torch.Generator,
) -> ModuleReport:
    plan = selection.attention_plan(arch.attn_consumer(layer).weight, _own(stats), shape, units_removed, config, gen)
    report = ModuleReport(
        kind="attn", units_before=shape.sizes.num_heads, units_after=plan.kept_heads.numel(),
        kept=plan.kept_heads.tolist(), kept_kv=plan.kept_kv.tolist(), reconstruct=config.reconstruct,
    )
    kept_channels = plan.channels(shape.head_dim)
    _reconstruct_consumer(layer, arch.o, stats, kept_channels, config, report)
    kv_rows = heads_to_channels(plan.kept_kv, shape.head_dim)
    arch.slice_producers(layer, "attn", {"q": kept_channels, "k": kv_rows, "v": kv_rows}, shape.sizes,
                         shape.head_dim)
    arch.refresh_layer(layer, shape.head_dim)
    return report


def prune_ffn(
    arch: Architecture, layer: nn.Module, shape: LayerShape, stats: Stats, removed: int,
    config: PruneConfig, gen: torch.Generator,
) -> ModuleReport:
    kept = selection.kept_neurons(arch.ffn_consumer(layer).weight, _own(stats), removed, config, gen, config.intercept)
    report = ModuleReport(
        kind="mlp", units_before=shape.sizes.ffn, units_after=kept.numel(), kept=kept.tolist(),
        reconstruct=config.reconstruct,
    )
    _reconstruct_consumer(layer, arch.ffn_out, stats, kept, config, report)
    arch.slice_producers(layer, "mlp", {"ffn": kept}, shape.sizes, shape.head_dim)
    arch.refresh_layer(layer, shape.head_dim)
    return report


def prune_layer(
    arch: Architecture, layer: nn.Module, shape: LayerShape, stats: dict[str, GramStats], budget: Budget,
    config: PruneConfig, gens: dict[str, torch.Generator], index: int,
) -> LayerReport:
    """Prune attention, then the FFN. Consumes `stats`: the attention statistics are dropped before the FFN
    solve, so its workspace does not sit next to the attention Gram (16 MiB at hidden 2048)."""
    attn = prune_attention(arch, layer, shape, stats.pop("attn"), budget.attn_units, config, gens["attn"])
    if arch.moe is not None:
        mlp = moe.prune_moe(arch, layer, stats.pop("mlp"), budget, config, gens["mlp"])
    else:
        mlp = prune_ffn(arch, layer, shape, stats.pop("mlp"), budget.neurons, config, gens["mlp"])
    if budget.predicted is not None:
        attn.predicted, mlp.predicted = budget.predicted
    return LayerReport(index=index, attn=attn, mlp=mlp)
