"""Block-by-block calibration and pruning, shared by the in-memory and the streaming paths.

The first block's inputs are captured once; then each block is opened, its calibration activations run
through it with hooks feeding the statistics ops, it is solved and sliced, and its outputs become the
next block's inputs. Dense mode: statistics of the unpruned model, one forward pass in total. Sequential
mode (liar.sequential): the pruned model's inputs, fitted to the dense model's outputs.

The mathematics lives in pure functions elsewhere (stats, criteria, structure, allocation, functional);
this module owns the hooks and the order of work.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn
from tqdm.auto import tqdm

from liar import allocation, criteria, distributed, moe
from liar.activations import TensorStore
from liar.allocation import Budget
from liar.config import PruneConfig
from liar.models.base import Architecture
from liar.prune_layer import prune_layer
from liar.report import LayerReport
from liar.stats import GramStats
from liar.structure import LayerShape, attn_unit_scores

NewStore = Callable[[], TensorStore]


@dataclass
class CalibBatch:
    input_ids: torch.Tensor  # [B, L]
    attention_mask: torch.Tensor | None = None  # [B, L], 1 = real token


@dataclass
class BatchMeta:
    """Everything but the hidden states that one calibration batch hands every block."""

    args: tuple
    kwargs: dict
    mask: torch.Tensor | None  # [B, L] bool, True = real token; None = every token


class Blocks(Protocol):
    """The model's blocks, opened one at a time (in memory: always there; streaming: read from shards)."""

    def __len__(self) -> int: ...

    def open(self, index: int) -> nn.Module: ...

    def close(self, index: int, layer: nn.Module, report: LayerReport | None) -> None: ...


class InMemoryBlocks:
    def __init__(self, layers: nn.ModuleList):
        self.layers = layers

    def __len__(self) -> int:
        return len(self.layers)

    def open(self, index: int) -> nn.Module:
        return self.layers[index]

    def close(self, index: int, layer: nn.Module, report: LayerReport | None) -> None:
        return None


class _Captured(Exception):
    def __init__(self, args: tuple, kwargs: dict):
        super().__init__("captured")
        self.args_, self.kwargs_ = args, kwargs


def capture_inputs(model: nn.Module, first: nn.Module, batches: list[CalibBatch], device: torch.device,
                   hidden: TensorStore) -> list[BatchMeta]:
    """Run each batch (this rank's share of them) up to the first block; its hidden states go to `hidden`,
    the rest is returned."""

    def stop(_module, args, kwargs):
        raise _Captured(args, kwargs)

    metas = []
    handle = first.register_forward_pre_hook(stop, with_kwargs=True)
    try:
        for batch in distributed.shard(batches):
            mask = None if batch.attention_mask is None else batch.attention_mask.to(device)
            try:
                model(input_ids=batch.input_ids.to(device), attention_mask=mask, use_cache=False)
            except _Captured as c:
                args, kwargs = c.args_, dict(c.kwargs_)
                hidden.append(args[0] if args else kwargs.pop("hidden_states"))
                metas.append(BatchMeta(tuple(args[1:]), kwargs, None if mask is None else mask.bool()))
            else:
                raise RuntimeError("the model never called its first block; is the layer list right?")
    finally:
        handle.remove()
    return metas


@contextmanager
def accumulate(consumers: dict[nn.Module, GramStats], state: dict) -> Iterator[None]:
    """Feed each consumer's input into its statistics; state['mask'] holds the current token mask."""

    def make_hook(stats: GramStats):
        def hook(module, args):
            if isinstance(stats, GramStats):
                stats.update(args[0], state.get("mask"))
            else:  # a mixture of experts: liar.moe.ExpertStats reads the routing too
                stats.update_routed(module, args, state.get("mask"))

        return hook

    handles = [m.register_forward_pre_hook(make_hook(s)) for m, s in consumers.items()]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def block_output(out) -> torch.Tensor:
    return out[0] if isinstance(out, tuple) else out


def run_block(block: nn.Module, metas: list[BatchMeta], hidden: Iterable[torch.Tensor],
              consumers: dict[nn.Module, GramStats], out: TensorStore | None) -> TensorStore | None:
    """Forward every batch through `block`, accumulating consumer statistics; outputs go to `out`."""
    state: dict = {}
    with accumulate(consumers, state):
        for meta, h in zip(metas, hidden, strict=True):
            state["mask"] = meta.mask
            y = block_output(block(h, *meta.args, **meta.kwargs))
            if out is not None:
                out.append(y)
    return out


def generator(config: PruneConfig, layer: int, kind: str) -> torch.Generator:
    return torch.Generator().manual_seed(config.seed * 1_000_003 + 2 * layer + (kind == "mlp"))


def new_stats(arch: Architecture, layer: nn.Module, backend: str, cls=GramStats) -> dict:
    device = arch.attn_consumer(layer).weight.device
    attn = cls.zeros(arch.attn_consumer(layer).in_features, device, backend)
    if arch.moe is not None:
        return {"attn": attn, "mlp": moe.new_stats(arch.moe, layer, backend, sequential=cls is not GramStats)}
    return {"attn": attn, "mlp": cls.zeros(arch.ffn_consumer(layer).in_features, device, backend)}


def consumer_map(arch: Architecture, layer: nn.Module, stats: dict) -> dict:
    ffn = layer.get_submodule(arch.moe.experts) if arch.moe is not None else arch.ffn_consumer(layer)
    return {arch.attn_consumer(layer): stats["attn"], ffn: stats["mlp"]}


def dense_step(arch: Architecture, layer: nn.Module, shape: LayerShape, budget: Budget, metas: list[BatchMeta],
               hidden: TensorStore, config: PruneConfig, index: int, new_store: NewStore
               ) -> tuple[LayerReport, TensorStore]:
    """Statistics of the dense block, its outputs for the next block, then the block pruned in place."""
    began = time.perf_counter()
    stats = new_stats(arch, layer, config.backend)
    out = run_block(layer, metas, hidden.drain(), consumer_map(arch, layer, stats), new_store())
    for kind, s in stats.items():
        distributed.sum_stats_(s)
        s.check_finite(f"layer {index} {kind} consumer inputs")
    forward = time.perf_counter()
    gens = {kind: generator(config, index, kind) for kind in stats}
    report = prune_layer(arch, layer, shape, stats, budget, config, gens, index=index)
    report.stages = {"forward": forward - began, "solve": time.perf_counter() - forward}
    return report, out


def _score_block(arch: Architecture, layer: nn.Module, shape: LayerShape, metas: list[BatchMeta],
                 hidden: TensorStore, config: PruneConfig, index: int, new_store: NewStore):
    """(attention unit scores, neuron scores, outputs) of one dense block."""
    stats = new_stats(arch, layer, config.backend)
    out = run_block(layer, metas, hidden.drain(), consumer_map(arch, layer, stats), new_store())
    for s in stats.values():
        distributed.sum_stats_(s)
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
            blocks.close(i, layer, None)
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
    from liar.sequential import sequential_step

    reports = []
    for i in tqdm(range(start, len(blocks)), desc="pruning", unit="layer", initial=start, total=len(blocks),
                  disable=not distributed.is_main()):
        began = time.perf_counter()
        with distributed.step():
            layer = blocks.open(i)
            opened = time.perf_counter()
            if student is None:
                report, out = dense_step(arch, layer, shapes[i], budgets[i], metas, teacher, config, i, new_store)
                teacher.clear()
                teacher = out
            else:
                report, t_out, s_out = sequential_step(arch, layer, shapes[i], budgets[i], metas, teacher, student,
                                                       config, i, new_store)
                teacher.clear()
                student.clear()
                teacher, student = t_out, s_out
            closing = time.perf_counter()
            report.stages["read"] = opened - began
            blocks.close(i, layer, report)
            report.stages["write"] = time.perf_counter() - closing
            report.seconds = time.perf_counter() - began
        reports.append(report)
    teacher.clear()
    if student is not None:
        student.clear()
    return reports


@torch.no_grad()
def prune_model(model: nn.Module, arch: Architecture, batches: list[CalibBatch], config: PruneConfig,
                device: torch.device, new_store: NewStore) -> list[LayerReport]:
    """Prune every block of an in-memory `model` in place; returns one report per block."""
    layers = arch.layer_list(model)
    blocks = InMemoryBlocks(layers)
    head_dim = arch.head_dim(model.config)
    shapes = [LayerShape.of(arch, layer, head_dim) for layer in layers]
    if config.allocation == "global":
        hidden = new_store()
        metas = capture_inputs(model, layers[0], batches, device, hidden)
        budgets = global_budgets(arch, blocks, shapes, metas, hidden, config, new_store)
    else:
        budgets = uniform_budgets(arch, model.config, shapes, config)
    teacher = new_store()
    metas = capture_inputs(model, layers[0], batches, device, teacher)
    student = None
    if config.calibration == "sequential":
        student = new_store()
        for h in teacher:
            student.append(h)
    return prune_blocks(arch, blocks, shapes, budgets, metas, teacher, student, config, new_store)
