"""Running calibration batches through blocks: the first block's inputs captured once, forward passes with
hooks that feed each consumer's input statistics, and the seeded generators of the random criterion.

Shared by the dense pipeline (liar.pipeline) and sequential calibration (liar.sequential).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from liar import distributed, moe
from liar.activations import TensorStore
from liar.config import PruneConfig
from liar.models.base import Architecture
from liar.stats import CrossStats, FoldedStats, GramStats

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
    index: int = 0  # the batch's position in the whole calibration set (on every rank): its fold is index % 2


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
        for index, batch in distributed.shard(list(enumerate(batches))):
            mask = None if batch.attention_mask is None else batch.attention_mask.to(device)
            try:
                model(input_ids=batch.input_ids.to(device), attention_mask=mask, use_cache=False)
            except _Captured as c:
                args, kwargs = c.args_, dict(c.kwargs_)
                hidden.append(args[0] if args else kwargs.pop("hidden_states"))
                metas.append(BatchMeta(tuple(args[1:]), kwargs, None if mask is None else mask.bool(), index))
            else:
                raise RuntimeError("the model never called its first block; is the layer list right?")
    finally:
        handle.remove()
    return metas


@contextmanager
def accumulate(consumers: dict[nn.Module, GramStats], state: dict) -> Iterator[None]:
    """Feed each consumer's input into its statistics; state['mask'] holds the current token mask, state['batch']
    the current batch's index (its fold) and state['statistics'] collects the seconds spent in the statistics ops."""

    def make_hook(stats: GramStats):
        def hook(module, args):
            began = time.perf_counter()
            if isinstance(stats, GramStats):
                stats.update(args[0], state.get("mask"))
            elif isinstance(stats, FoldedStats):
                stats.update(args[0], state.get("mask"), state["batch"])
            else:  # a mixture of experts: liar.moe.ExpertStats reads the routing too
                stats.update_routed(module, args, state.get("mask"))
            state["statistics"] = state.get("statistics", 0.0) + time.perf_counter() - began

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
              consumers: dict[nn.Module, GramStats], out: TensorStore | None, timer: dict | None = None
              ) -> TensorStore | None:
    """Forward every batch through `block`, accumulating consumer statistics; outputs go to `out`.
    `timer['statistics']` receives the seconds spent in the statistics ops."""
    state: dict = {}
    with accumulate(consumers, state):
        for meta, h in zip(metas, hidden, strict=True):
            state["mask"], state["batch"] = meta.mask, meta.index
            y = block_output(block(h, *meta.args, **meta.kwargs))
            if out is not None:
                out.append(y)
    if timer is not None:
        timer["statistics"] = timer.get("statistics", 0.0) + state.get("statistics", 0.0)
    return out


def generator(config: PruneConfig, layer: int, kind: str) -> torch.Generator:
    return torch.Generator().manual_seed(config.seed * 1_000_003 + 2 * layer + (kind == "mlp"))


def new_stats(arch: Architecture, layer: nn.Module, backend: str, cls=GramStats) -> dict:
    """Zeroed statistics of the block's two consumers: GramStats (dense), FoldedStats (dense, alpha='auto') or
    CrossStats (sequential)."""
    if cls is FoldedStats and arch.moe is not None:
        raise ValueError(f"{arch.name}: alpha='auto' is not implemented for mixture-of-experts models; give a "
                         "number (e.g. --alpha 0.01)")
    def zeros(consumer: nn.Linear):
        if cls is CrossStats:
            return CrossStats.zeros(consumer.in_features, consumer.out_features, consumer.weight.device, backend)
        return cls.zeros(consumer.in_features, consumer.weight.device, backend)

    attn = zeros(arch.attn_consumer(layer))
    if arch.moe is not None:
        return {"attn": attn, "mlp": moe.new_stats(arch.moe, layer, backend, sequential=cls is not GramStats)}
    return {"attn": attn, "mlp": zeros(arch.ffn_consumer(layer))}


def consumer_map(arch: Architecture, layer: nn.Module, stats: dict) -> dict:
    ffn = layer.get_submodule(arch.moe.experts) if arch.moe is not None else arch.ffn_consumer(layer)
    return {arch.attn_consumer(layer): stats["attn"], ffn: stats["mlp"]}


def sum_over_ranks(stats) -> None:
    """Sum GramStats / FoldedStats / CrossStats over torch.distributed ranks in place (sums, token counts, target
    energy); a no-op outside a process group."""
    if not distributed.active():
        return
    if isinstance(stats, FoldedStats):
        for fold in stats.folds:
            sum_over_ranks(fold)
        return
    cross = isinstance(stats, CrossStats)
    own = stats.student if cross else stats
    scalars = torch.tensor([float(own.n), *([float(stats.energy)] if cross else [])], dtype=torch.float64,
                           device=own.G.device)
    distributed.all_reduce_(own.G, own.s, scalars, *([stats.Y, stats.s_y] if cross else []))
    own.n = int(round(float(scalars[0])))
    own.symmetric = False
    if cross:
        stats.energy = float(scalars[1])
