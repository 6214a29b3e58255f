"""Sequential calibration: every block sees the already-pruned model's activations (the student) and its
consumers are fitted to the dense model's outputs (the teacher) through the teacher–student cross-Gram.

Per block, three passes over the calibration batches:
  A. teacher through the dense block (its outputs, its consumer inputs, the dense consumer outputs), and
     the student up to the attention consumer → attention cross statistics; prune attention.
  B. the student through the block with pruned attention, up to the FFN consumer, against the cached
     teacher FFN inputs → FFN cross statistics; prune the FFN.
  C. the student through the pruned block → the next block's student inputs.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import nn

from liar.allocation import Budget
from liar.config import PruneConfig
from liar.models.base import Architecture
from liar.forward import BatchMeta, NewStore, block_output, generator, new_stats, run_block, sum_over_ranks
from liar.prune_layer import prune_attention, prune_ffn
from liar.report import LayerReport
from liar.activations import TensorStore
from liar.stats import CrossStats
from liar.structure import LayerShape


class _Stop(Exception):
    """Raised once the last tensor a pass needs is captured, so the rest of the block is skipped."""


def _record(block: nn.Module, meta: BatchMeta, hidden: torch.Tensor, capture: list[nn.Module],
            stop_at: nn.Module | None = None, targets: dict[nn.Module, CrossStats] | None = None,
            ) -> tuple[dict[nn.Module, torch.Tensor], torch.Tensor | None]:
    """Inputs of the `capture` modules (and the block output unless stopped early); the outputs of
    `targets` modules add to their dense output energy."""
    seen: dict[nn.Module, torch.Tensor] = {}

    def grab(module, args):
        seen[module] = args[0]
        if module is stop_at:
            raise _Stop

    def energy(module, _args, output):
        targets[module].add_target(output, meta.mask)

    handles = [m.register_forward_pre_hook(grab) for m in capture]
    handles += [m.register_forward_hook(energy) for m in (targets or {})]
    try:
        out = block_output(block(hidden, *meta.args, **meta.kwargs))
    except _Stop:
        out = None
    finally:
        for h in handles:
            h.remove()
    return seen, out


def sequential_step(
    arch: Architecture, layer: nn.Module, shape: LayerShape, budget: Budget, metas: list[BatchMeta],
    teacher: TensorStore, student: TensorStore, config: PruneConfig, index: int, new_store: NewStore,
    as_saved: Callable[[nn.Module], None],
) -> tuple[LayerReport, TensorStore, TensorStore]:
    """Prune one block on student statistics; `as_saved` brings the pruned block to the exact form it is saved
    in before the student runs through it, so a resumed run (which reads it back) sees the same numbers."""
    began = time.perf_counter()
    o, down = arch.attn_consumer(layer), arch.ffn_consumer(layer)
    stats = new_stats(arch, layer, config.backend, cls=CrossStats)
    t_out, s_out, t_ffn_in = new_store(), new_store(), new_store()
    statistics = 0.0
    for meta, h_t, h_s in zip(metas, teacher.drain(), student, strict=True):
        x_t, y_t = _record(layer, meta, h_t, [o, down], targets={o: stats["attn"], down: stats["mlp"]})
        t_out.append(y_t)
        t_ffn_in.append(x_t[down])
        x_s, _ = _record(layer, meta, h_s, [o], stop_at=o)
        counting = time.perf_counter()
        stats["attn"].update(x_s[o], x_t[o], meta.mask)
        statistics += time.perf_counter() - counting
    sum_over_ranks(stats["attn"])
    stats["attn"].check_finite(f"layer {index} attn consumer inputs")
    solving = time.perf_counter()
    attn = prune_attention(arch, layer, shape, stats["attn"], budget.attn_units, config,
                           generator(config, index, "attn"))
    solve = time.perf_counter() - solving
    for meta, h_s, x_t in zip(metas, student, t_ffn_in, strict=True):
        x_s, _ = _record(layer, meta, h_s, [down], stop_at=down)
        counting = time.perf_counter()
        stats["mlp"].update(x_s[down], x_t, meta.mask)
        statistics += time.perf_counter() - counting
    t_ffn_in.clear()
    sum_over_ranks(stats["mlp"])
    stats["mlp"].check_finite(f"layer {index} mlp consumer inputs")
    solving = time.perf_counter()
    mlp = prune_ffn(arch, layer, shape, stats["mlp"], budget.neurons, config, generator(config, index, "mlp"))
    solve += time.perf_counter() - solving
    as_saved(layer)
    run_block(layer, metas, student.drain(), {}, s_out)
    stages = {"forward": time.perf_counter() - began - solve - statistics, "statistics": statistics, "solve": solve}
    return LayerReport(index=index, attn=attn, mlp=mlp, stages=stages), t_out, s_out
