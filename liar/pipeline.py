"""Layer-by-layer calibration: capture the first block's inputs, then for each block run the calibration
activations through it with hooks feeding the statistics ops, solve, slice, and hand its dense outputs to
the next block (dense calibration mode: one forward pass over the calibration set in total).

The mathematics lives in pure functions elsewhere (stats, criteria, structure, allocation, functional);
this module owns the hooks and the order of work.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace

import torch
from torch import nn
from tqdm.auto import tqdm

from liar import allocation, criteria
from liar.allocation import Budget
from liar.config import PruneConfig
from liar.models.base import Architecture
from liar.prune_layer import prune_layer
from liar.report import LayerReport
from liar.stats import GramStats
from liar.structure import LayerShape, attn_unit_scores

log = logging.getLogger(__name__)


@dataclass
class CalibBatch:
    input_ids: torch.Tensor  # [B, L]
    attention_mask: torch.Tensor | None = None  # [B, L], 1 = real token


@dataclass
class LayerInput:
    """What one calibration batch hands a block: hidden states and the other call arguments."""

    hidden: torch.Tensor
    args: tuple
    kwargs: dict
    mask: torch.Tensor | None  # [B, L] bool, True = real token; None = every token


class _Captured(Exception):
    def __init__(self, args: tuple, kwargs: dict):
        super().__init__("captured")
        self.args_, self.kwargs_ = args, kwargs


def capture_inputs(model: nn.Module, first: nn.Module, batches: list[CalibBatch], device) -> list[LayerInput]:
    """Run each batch up to the first block and keep what that block would have been called with."""

    def stop(_module, args, kwargs):
        raise _Captured(args, kwargs)

    captured = []
    handle = first.register_forward_pre_hook(stop, with_kwargs=True)
    try:
        for batch in batches:
            mask = None if batch.attention_mask is None else batch.attention_mask.to(device)
            try:
                model(input_ids=batch.input_ids.to(device), attention_mask=mask, use_cache=False)
            except _Captured as c:
                args, kwargs = c.args_, dict(c.kwargs_)
                hidden = args[0] if args else kwargs.pop("hidden_states")
                captured.append(LayerInput(hidden, tuple(args[1:]), kwargs, None if mask is None else mask.bool()))
            else:
                raise RuntimeError("the model never called its first block; is the layer list right?")
    finally:
        handle.remove()
    return captured


@contextmanager
def accumulate(consumers: dict[nn.Module, GramStats], state: dict) -> Iterator[None]:
    """Feed each consumer's input into its statistics; state['mask'] holds the current token mask."""

    def make_hook(stats: GramStats):
        def hook(_module, args):
            stats.update(args[0], state.get("mask"))

        return hook

    handles = [m.register_forward_pre_hook(make_hook(s)) for m, s in consumers.items()]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def run_block(block: nn.Module, inputs: list[LayerInput], consumers: dict[nn.Module, GramStats]) -> list[LayerInput]:
    """Forward every batch through `block`, accumulating consumer statistics; returns the outputs."""
    state: dict = {}
    outputs = []
    with accumulate(consumers, state):
        for inp in inputs:
            state["mask"] = inp.mask
            out = block(inp.hidden, *inp.args, **inp.kwargs)
            outputs.append(replace(inp, hidden=out[0] if isinstance(out, tuple) else out))
    return outputs


def _new_stats(arch: Architecture, layer: nn.Module, backend: str) -> dict[str, GramStats]:
    device = arch.attn_consumer(layer).weight.device
    return {
        "attn": GramStats.zeros(arch.attn_consumer(layer).in_features, device, backend),
        "mlp": GramStats.zeros(arch.ffn_consumer(layer).in_features, device, backend),
    }


def _consumers(arch: Architecture, layer: nn.Module, stats: dict[str, GramStats]) -> dict[nn.Module, GramStats]:
    return {arch.attn_consumer(layer): stats["attn"], arch.ffn_consumer(layer): stats["mlp"]}


def generator(config: PruneConfig, layer: int, kind: str) -> torch.Generator:
    return torch.Generator().manual_seed(config.seed * 1_000_003 + 2 * layer + (kind == "mlp"))


def global_budgets(model, arch, batches, shapes, config, device) -> list[Budget]:
    """A scoring pass over the dense model, then one global ranking (see liar.allocation)."""
    layers = arch.layer_list(model)
    inputs = capture_inputs(model, layers[0], batches, device)
    attn_scores, ffn_scores = [], []
    for i, layer in enumerate(tqdm(layers, desc="scoring", unit="layer")):
        stats = _new_stats(arch, layer, config.backend)
        inputs = run_block(layer, inputs, _consumers(arch, layer, stats))
        shape = shapes[i]
        head = criteria.unit_scores(criteria.channel_scores(
            config.criterion, arch.attn_consumer(layer).weight, stats["attn"], generator(config, i, "attn")),
            shape.head_dim)
        attn_scores.append(attn_unit_scores(head, shape, config.gqa))
        ffn_scores.append(criteria.channel_scores(
            config.criterion, arch.ffn_consumer(layer).weight, stats["mlp"], generator(config, i, "mlp")))
    return allocation.global_(shapes, attn_scores, ffn_scores, config.ratio, config.gqa, config.min_keep)


@torch.no_grad()
def prune_model(model: nn.Module, arch: Architecture, batches: list[CalibBatch], config: PruneConfig,
                device: torch.device) -> list[LayerReport]:
    """Prune every block of `model` in place (dense calibration mode); returns one report per block."""
    layers = arch.layer_list(model)
    head_dim = arch.head_dim(model.config)
    shapes = [LayerShape.of(arch, layer, head_dim) for layer in layers]
    if config.allocation == "global":
        budgets = global_budgets(model, arch, batches, shapes, config, device)
    else:
        heads_ok = lambda heads: arch.heads_ok(model.config, heads)  # noqa: E731
        budgets = [allocation.uniform(s, config.ratio, config.gqa, config.min_keep, heads_ok) for s in shapes]
    inputs = capture_inputs(model, layers[0], batches, device)
    reports = []
    for i, layer in enumerate(tqdm(layers, desc="pruning", unit="layer")):
        start = time.perf_counter()
        stats = _new_stats(arch, layer, config.backend)
        inputs = run_block(layer, inputs, _consumers(arch, layer, stats))
        for kind, s in stats.items():
            s.check_finite(f"layer {i} {kind} consumer inputs")
        gens = {kind: generator(config, i, kind) for kind in stats}
        report = prune_layer(arch, layer, shapes[i], stats, budgets[i], config, gens, index=i)
        report.seconds = time.perf_counter() - start
        reports.append(report)
        log.debug("layer %d: %s", i, report)
    return reports
