"""Block-by-block calibration and pruning, in the order the driver (liar.driver) runs it.

Each block is opened, its calibration activations run through it with hooks feeding the statistics ops
(liar.forward), it is solved and sliced, and its outputs become the next block's inputs. Dense mode:
statistics of the unpruned model, one forward pass in total. Sequential mode (liar.sequential): the pruned
model's inputs, fitted to the dense model's outputs.

The mathematics lives in pure functions elsewhere (stats, criteria, structure, allocation, functional);
this module owns the order of work.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

import torch
from torch import nn
from tqdm.auto import tqdm

from liar import allocation, criteria, distributed, moe, selection
from liar.activations import TensorStore
from liar.allocation import Budget
from liar.config import PruneConfig
from liar.forward import BatchMeta, NewStore, consumer_map, generator, new_stats, run_block, sum_over_ranks
from liar.models.base import Architecture
from liar.prune_layer import prune_layer
from liar.reconstruct import output_energy
from liar.report import LayerReport
from liar.sequential import sequential_step
from liar.stats import FoldedStats, GramStats
from liar.structure import LayerShape, attn_unit_scores


class Blocks(Protocol):
    """The model's blocks, opened one at a time in order (see liar.driver: a source to read from, a sink to write
    to; the next block may be read, and the last one written, in the background meanwhile)."""

    def __len__(self) -> int: ...

    def open(self, index: int) -> nn.Module: ...

    def as_saved(self, layer: nn.Module) -> None: ...

    def close(self, index: int, layer: nn.Module, report: LayerReport | None, began: float) -> None:
        """Save (or hand to a background writer) and free a block; its 'write' stage is the time since `began`."""


def dense_step(arch: Architecture, layer: nn.Module, shape: LayerShape, budget: Budget, metas: list[BatchMeta],
               hidden: TensorStore, config: PruneConfig, index: int, new_store: NewStore
               ) -> tuple[LayerReport, TensorStore]:
    """Statistics of the dense block, its outputs for the next block, then the block pruned in place."""
    began = time.perf_counter()
    stats = new_stats(arch, layer, config.backend, cls=FoldedStats if config.alpha == "auto" else GramStats)
    timer: dict = {}
    out = run_block(layer, metas, hidden.drain(), consumer_map(arch, layer, stats), new_store(), timer)
    for kind, s in stats.items():
        sum_over_ranks(s)
        s.check_finite(f"layer {index} {kind} consumer inputs")
    forward = time.perf_counter()
    gens = {kind: generator(config, index, kind) for kind in stats}
    report = prune_layer(arch, layer, shape, stats, budget, config, gens, index=index)
    report.stages = {"forward": forward - began - timer["statistics"], "statistics": timer["statistics"],
                     "solve": time.perf_counter() - forward}
    return report, out


def _scoring_pass(arch: Architecture, blocks: Blocks, metas: list[BatchMeta], hidden: TensorStore,
                  config: PruneConfig, new_store: NewStore, score: Callable[[int, nn.Module, dict, float], tuple]
                  ) -> list[tuple]:
    """One pass over the dense blocks: each block's consumer statistics and the mean ‖h‖² per token of its input
    (the residual stream) go to `score(index, layer, stats, energy)`; its results, one per block."""
    results = []
    for i in tqdm(range(len(blocks)), desc="scoring", unit="layer", disable=not distributed.is_main()):
        with distributed.step():
            layer = blocks.open(i)
            stats = new_stats(arch, layer, config.backend)
            energy = torch.zeros(2, dtype=torch.float64, device=arch.attn_consumer(layer).weight.device)  # Σ‖h‖², N
            inputs = _metered(hidden.drain(), metas, energy)
            out = run_block(layer, metas, inputs, consumer_map(arch, layer, stats), new_store())
            for s in stats.values():
                sum_over_ranks(s)
            distributed.all_reduce_(energy)
            results.append(score(i, layer, stats, float(energy[0] / energy[1])))
            hidden.clear()
            hidden = out
            blocks.close(i, layer, None, time.perf_counter())
    hidden.clear()
    return results


def _metered(hidden: Iterable[torch.Tensor], metas: list[BatchMeta], energy: torch.Tensor) -> Iterator[torch.Tensor]:
    for h, meta in zip(hidden, metas, strict=True):
        sq = h.double().square().sum(-1)
        sq = sq if meta.mask is None else sq[meta.mask.to(sq.device)]
        energy[0] += sq.sum().to(energy.device)
        energy[1] += sq.numel()
        yield h


def global_budgets(arch: Architecture, blocks: Blocks, shapes: list[LayerShape], metas: list[BatchMeta],
                   hidden: TensorStore, config: PruneConfig, new_store: NewStore) -> list[Budget]:
    """A scoring pass over the dense model, then one global ranking of FLAP-normalised scores (liar.allocation)."""

    def score(i, layer, stats, energy):
        channel = criteria.channel_scores(config.criterion, arch.attn_consumer(layer).weight, stats["attn"],
                                          generator(config, i, "attn"))
        heads = criteria.unit_scores(allocation.standardized(channel.double().square()), shapes[i].head_dim)
        ffn = criteria.channel_scores(config.criterion, arch.ffn_consumer(layer).weight, stats["mlp"],
                                      generator(config, i, "mlp"))
        return attn_unit_scores(heads, shapes[i], config.gqa), allocation.standardized(ffn)

    _dense_only(arch, "global")
    attn_scores, ffn_scores = zip(*_scoring_pass(arch, blocks, metas, hidden, config, new_store, score))
    return allocation.global_(shapes, list(attn_scores), list(ffn_scores), config.ratio, config.gqa, config.min_keep)


def error_budgets(arch: Architecture, blocks: Blocks, shapes: list[LayerShape], metas: list[BatchMeta],
                  hidden: TensorStore, config: PruneConfig, new_store: NewStore) -> list[Budget]:
    """A scoring pass that measures each module's LIAR error curve, then allocation.by_error."""

    def score(i, layer, stats, energy):
        shape = shapes[i]
        curves = []
        for kind, consumer, (units, groups), most in (
                ("attn", arch.attn_consumer(layer), selection.head_units(shape, config.gqa),
                 shape.attn_units(config.gqa) - shape.min_attn_units(config.gqa, config.min_keep)),
                ("mlp", arch.ffn_consumer(layer), selection.neuron_units(shape.sizes.ffn),
                 shape.sizes.ffn - shape.min_neurons(config.min_keep))):
            run = selection.eliminate(consumer.weight, stats[kind], units, groups, most, config.intercept,
                                      selection.damping_of(config), bias=consumer.bias)
            weight = output_energy(stats[kind].G, stats[kind].s, stats[kind].n, consumer.weight, consumer.bias,
                                   torch.float64) / stats[kind].n / energy
            curves.append(allocation.Curve(run.steps, run.errors, weight))
        return tuple(curves)

    _dense_only(arch, "error")
    attn, mlp = zip(*_scoring_pass(arch, blocks, metas, hidden, config, new_store, score))
    return allocation.by_error(shapes, list(attn), list(mlp), config.ratio, config.gqa)


def _dense_only(arch: Architecture, allocation_name: str) -> None:
    if arch.moe is not None:
        raise ValueError(f"{arch.name}: {allocation_name} allocation is not implemented for mixture-of-experts "
                         "models; use allocation='uniform'")


def uniform_budgets(arch: Architecture, model_config, shapes: list[LayerShape], config: PruneConfig) -> list[Budget]:
    """allocation 'uniform' (every layer `ratio`) and 'depth' (allocation.depth_ratios): no scoring pass."""
    heads_ok = lambda heads: arch.heads_ok(model_config, heads)  # noqa: E731
    ratios = (allocation.depth_ratios(len(shapes), config.ratio) if config.allocation == "depth"
              else [config.ratio] * len(shapes))
    budgets = [allocation.uniform(s, r, config.gqa, config.min_keep, heads_ok) for s, r in zip(shapes, ratios)]
    return moe.with_expert_removal(arch, shapes, budgets, config)


def prune_blocks(arch: Architecture, blocks: Blocks, shapes: list[LayerShape], budgets: list[Budget],
                 metas: list[BatchMeta], teacher: TensorStore, student: TensorStore | None, config: PruneConfig,
                 new_store: NewStore, start: int = 0) -> list[LayerReport]:
    """Prune blocks start.. in order. Dense mode reads `teacher` only; sequential mode also `student`."""
    reports = []
    for i in tqdm(range(start, len(blocks)), desc="pruning", unit="layer", initial=start, total=len(blocks),
                  disable=not distributed.is_main()):
        began = time.perf_counter()
        with distributed.step():
            layer = blocks.open(i)
            opened = time.perf_counter()
            if student is None:
                report, out = dense_step(arch, layer, shapes[i], budgets[i], metas, teacher, config, i, new_store)
                stepped = time.perf_counter()  # the write stage: freeing the consumed activations, then saving
                teacher.clear()
                teacher = out
            else:
                report, t_out, s_out = sequential_step(arch, layer, shapes[i], budgets[i], metas, teacher, student,
                                                       config, i, new_store, blocks.as_saved)
                stepped = time.perf_counter()
                teacher.clear()
                student.clear()
                teacher, student = t_out, s_out
            report.stages["read"] = opened - began
            blocks.close(i, layer, report, stepped)
        reports.append(report)
    teacher.clear()
    if student is not None:
        student.clear()
    return reports
