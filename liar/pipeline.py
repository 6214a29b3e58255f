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
from typing import Protocol

from torch import nn
from tqdm.auto import tqdm

from liar import allocation, criteria, distributed, moe
from liar.activations import TensorStore
from liar.allocation import Budget
from liar.config import PruneConfig
from liar.forward import BatchMeta, NewStore, consumer_map, generator, new_stats, run_block, sum_over_ranks
from liar.models.base import Architecture
from liar.prune_layer import prune_layer
from liar.report import LayerReport
from liar.sequential import sequential_step
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
    stats = new_stats(arch, layer, config.backend)
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


def _score_block(arch: Architecture, layer: nn.Module, shape: LayerShape, metas: list[BatchMeta],
                 hidden: TensorStore, config: PruneConfig, index: int, new_store: NewStore):
    """(attention unit scores, neuron scores, outputs) of one dense block."""
    stats = new_stats(arch, layer, config.backend)
    out = run_block(layer, metas, hidden.drain(), consumer_map(arch, layer, stats), new_store())
    for s in stats.values():
        sum_over_ranks(s)
    channel = criteria.channel_scores(config.criterion, arch.attn_consumer(layer).weight, stats["attn"],
                                      generator(config, index, "attn"))
    attn = attn_unit_scores(criteria.unit_scores(channel, shape.head_dim), shape, config.gqa)
    ffn = criteria.channel_scores(config.criterion, arch.ffn_consumer(layer).weight, stats["mlp"],
                                  generator(config, index, "mlp"))
    return attn, ffn, out


def global_budgets(arch: Architecture, blocks: Blocks, shapes: list[LayerShape], metas: list[BatchMeta],
                   hidden: TensorStore, config: PruneConfig, new_store: NewStore) -> list[Budget]:
    """A scoring pass over the dense model, then one global ranking (see liar.allocation)."""
    if arch.moe is not None:
        raise ValueError(f"{arch.name}: global allocation is not implemented for mixture-of-experts models; "
                         "use allocation='uniform'")
    attn_scores, ffn_scores = [], []
    for i in tqdm(range(len(blocks)), desc="scoring", unit="layer", disable=not distributed.is_main()):
        with distributed.step():
            layer = blocks.open(i)
            attn, ffn, out = _score_block(arch, layer, shapes[i], metas, hidden, config, i, new_store)
            hidden.clear()
            hidden = out
            attn_scores.append(attn)
            ffn_scores.append(ffn)
            blocks.close(i, layer, None, time.perf_counter())
    hidden.clear()
    return allocation.global_(shapes, attn_scores, ffn_scores, config.ratio, config.gqa, config.min_keep)


def uniform_budgets(arch: Architecture, model_config, shapes: list[LayerShape], config: PruneConfig) -> list[Budget]:
    heads_ok = lambda heads: arch.heads_ok(model_config, heads)  # noqa: E731
    budgets = [allocation.uniform(s, config.ratio, config.gqa, config.min_keep, heads_ok) for s in shapes]
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
