"""`LIARPruningModifier`: structured pruning + LIAR reconstruction as an llm-compressor modifier
(extra `liar[llmcompressor]`).

    from llmcompressor import oneshot
    from liar.integrations.llmcompressor import LIARPruningModifier
    oneshot(model=model, dataset=ds, recipe=[LIARPruningModifier(ratio=0.2)], pipeline="sequential",
            propagate_error=False)
    model.save_pretrained(out)        # stock config: loads like a `liar prune --allocation uniform` output

llm-compressor's sequential pipeline onloads one decoder layer at a time and runs the calibration batches
through it; hooks on its two consumers (o_proj, down_proj) accumulate G = Σ x xᵀ, s = Σ x with liar's
`gram_update`, and at SEQUENTIAL_EPOCH_END that layer is scored, cut and reconstructed exactly as
`liar prune` does (same criteria, unit selection, uniform allocation and solve). With
`propagate_error=False` the next layer sees the dense layer's outputs, i.e. liar's `--calibration dense`,
and the result equals `liar.prune` on the same calibration ids; with llm-compressor's default (True) each
layer is calibrated on the already-pruned prefix's outputs (its own statistics, not liar's teacher-student
`sequential` fit). Global allocation needs every layer's scores before the first cut, which a
layer-by-layer pipeline does not give: it is refused. Calibration samples should be unpadded (padding
tokens are not masked out of the statistics).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from liar import allocation, criteria
from liar.config import PruneConfig
from liar.functional import GramStats, reconstruct
from liar.integrations import require
from liar.integrations.stock_config import finalize_config
from liar.models import architecture_for
from liar.models.base import set_linear, slice_rows
from liar.structure import LayerShape, heads_to_channels, select_heads, select_neurons

require("llmcompressor", "llmcompressor", "llmcompressor")
from llmcompressor.core import Event, State  # noqa: E402
from llmcompressor.modifiers import Modifier  # noqa: E402
from pydantic import PrivateAttr, model_validator  # noqa: E402

SOLVE_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def _generator(seed: int, layer: int, kind: str) -> torch.Generator:
    # the seeding `liar prune` uses, so --criterion random picks the same units
    return torch.Generator().manual_seed(seed * 1_000_003 + 2 * layer + (kind == "mlp"))


def _save_with_pruned_config(model, arch) -> None:
    """llm-compressor's save_pretrained rewrites config.json from the original checkpoint, keeping only its own
    expert-count changes (`resave_config`); re-apply the widths and bias flags this modifier changed."""
    config = model.config
    names = [arch.heads_field, arch.kv_heads_field, arch.ffn_field, "head_dim",
             arch.attn_bias_flag, arch.mlp_bias_flag]
    fields = {n: getattr(config, n) for n in names if n is not None and hasattr(config, n)}
    inner = model.save_pretrained

    @functools.wraps(inner)
    def save_pretrained(save_directory, *args, **kwargs):
        result = inner(save_directory, *args, **kwargs)
        path = Path(save_directory) / "config.json"
        if path.is_file():
            raw = json.loads(path.read_text(encoding="utf-8"))
            raw.update(fields)
            path.write_text(json.dumps(raw, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        return result

    model.save_pretrained = save_pretrained


class LIARPruningModifier(Modifier):
    """Remove `ratio` of every decoder layer's attention + FFN parameters (heads, KV groups, neurons) and
    reconstruct o_proj / down_proj. Fields mean what they mean in `liar.PruneConfig`."""

    requires_calibration_data: bool = True
    ratio: float = 0.2
    criterion: str = "flap"
    reconstruct: str = "liar"
    allocation: str = "uniform"
    gqa: str = "per-group"
    intercept: bool = True
    alpha: float = 1e-2
    solve_dtype: str = "float32"
    min_keep: float = 0.1
    seed: int = 0

    _prune: Any = PrivateAttr(default=None)
    _arch: Any = PrivateAttr(default=None)
    _stats: dict = PrivateAttr(default_factory=dict)  # layer index -> {"attn": GramStats, "mlp": GramStats}
    _kept: dict = PrivateAttr(default_factory=dict)  # layer index -> {"heads", "kv", "neurons"} kept

    @model_validator(mode="after")
    def _validate(self) -> LIARPruningModifier:
        self._prune = PruneConfig(ratio=self.ratio, criterion=self.criterion, reconstruct=self.reconstruct,
                                  allocation=self.allocation, gqa=self.gqa, intercept=self.intercept,
                                  alpha=self.alpha, solve_dtype=self.solve_dtype, min_keep=self.min_keep,
                                  seed=self.seed)
        if self.allocation != "uniform":
            raise ValueError("LIARPruningModifier supports allocation='uniform' only: global allocation ranks every "
                             "layer before the first cut, which llm-compressor's layer-by-layer pipeline does not "
                             "allow; use `liar prune --allocation global`")
        return self

    @property
    def kept_units(self) -> dict:
        """Per pruned layer: the kept query heads, KV heads and FFN neurons (original indices)."""
        return self._kept

    def on_initialize(self, state: State, **kwargs) -> bool:
        self._arch = architecture_for(state.model)
        return True

    def on_calibration_start(self, state: State, event: Event, **kwargs) -> None:
        arch = self._arch
        for i, layer in enumerate(arch.layer_list(state.model)):
            for kind, consumer in (("attn", arch.attn_consumer(layer)), ("mlp", arch.ffn_consumer(layer))):
                self.register_hook(consumer, self._hook(i, kind), "forward_pre")

    def _hook(self, index: int, kind: str):
        def accumulate(module: nn.Module, args: tuple) -> None:
            x = args[0]
            per_layer = self._stats.setdefault(index, {})
            if kind not in per_layer:
                per_layer[kind] = GramStats.zeros(x.shape[-1], device=x.device)
            per_layer[kind].update(x.detach())
        return accumulate

    def on_sequential_epoch_end(self, state: State, event: Event, **kwargs) -> None:
        layers = self._arch.layer_list(state.model)
        for index in sorted(i for i, s in self._stats.items() if len(s) == 2):
            with torch.no_grad():
                self._prune_layer(state.model.config, layers[index], index, self._stats.pop(index))

    def on_calibration_end(self, state: State, event: Event, **kwargs) -> None:
        self.remove_hooks()
        if self._stats:
            raise RuntimeError(f"layers {sorted(self._stats)} were calibrated but never pruned")

    def on_finalize(self, state: State, **kwargs) -> bool:
        layers = self._arch.layer_list(state.model)
        missing = [i for i in range(len(layers)) if i not in self._kept]
        if missing:
            raise RuntimeError(f"layers {missing} saw no calibration data and were not pruned; pass a dataset")
        finalize_config(state.model, self._arch)
        _save_with_pruned_config(state.model, self._arch)
        return True

    # ---- one layer, as `liar prune` does it --------------------------------------------------------
    def _prune_layer(self, model_config, layer: nn.Module, index: int, stats: dict[str, GramStats]) -> None:
        arch, cfg = self._arch, self._prune
        head_dim = arch.head_dim(model_config)
        shape = LayerShape.of(arch, layer, head_dim)
        budget = allocation.uniform(shape, cfg.ratio, cfg.gqa, cfg.min_keep,
                                    lambda heads: arch.heads_ok(model_config, heads))
        o = arch.attn_consumer(layer)
        channel = criteria.channel_scores(cfg.criterion, o.weight, stats["attn"], _generator(cfg.seed, index, "attn"))
        plan = select_heads(criteria.unit_scores(channel, head_dim), shape, cfg.gqa, budget.attn_units)
        self._consumer(layer, arch.o, stats["attn"], plan.channels(head_dim))
        slice_rows(layer, arch.q, plan.channels(head_dim))
        for path in (arch.k, arch.v):
            slice_rows(layer, path, heads_to_channels(plan.kept_kv, head_dim))
        down = arch.ffn_consumer(layer)
        channel = criteria.channel_scores(cfg.criterion, down.weight, stats["mlp"], _generator(cfg.seed, index, "mlp"))
        neurons = select_neurons(channel, budget.neurons)
        self._consumer(layer, arch.ffn_out, stats["mlp"], neurons)
        for path in arch.ffn_in:
            slice_rows(layer, path, neurons)
        arch.refresh_layer(layer, head_dim)
        self._kept[index] = {"heads": plan.kept_heads.tolist(), "kv": plan.kept_kv.tolist(),
                             "neurons": neurons.tolist()}

    def _consumer(self, layer: nn.Module, path: str, stats: GramStats, kept: torch.Tensor) -> None:
        consumer = layer.get_submodule(path)
        if kept.numel() == consumer.in_features:
            return
        cfg = self._prune
        r = reconstruct(stats, consumer.weight, consumer.bias, kept, mode=cfg.reconstruct, alpha=cfg.alpha,
                        intercept=cfg.intercept, solve_dtype=SOLVE_DTYPES[cfg.solve_dtype])
        set_linear(layer, path, r.weight, r.bias)


__all__ = ["LIARPruningModifier"]
