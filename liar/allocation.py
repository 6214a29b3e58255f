"""How many attention units and FFN neurons each layer gives up for a target ratio.

`ratio` is the fraction of attention + FFN block parameters removed.

uniform: every layer removes `ratio` of its block. Attention comes in coarse units (a slot of one head
    per KV group, or a whole group), so the attention count is rounded to the nearest unit and the FFN
    absorbs the remainder: each layer lands within half a neuron's cost of the target. Head counts the
    stock config cannot express (LlamaConfig needs hidden_size % heads == 0) are skipped.
depth: SlimGPT-style schedule. Layer l of L removes ratio · (1 − s + 2s·l/(L−1)) (s = DEPTH_SPREAD): half
    the ratio at the first layer, 1.5× at the last, the mean ratio overall; each layer as in uniform.
error: reconstruction-aware. Each module's curve of LIAR's output error against units removed (liar.selection,
    from the layer's own statistics), weighted by the module's output energy over the residual stream's (so an
    error is the perturbation it makes to the stream each layer reads), then units are removed in order of
    least weighted error per parameter across all modules: convex curves, so a Lagrangian optimum of
    Σ error under the parameter budget; each module stays in its own removal order and keeps `min_keep`.
global: FLAP's adaptive structure (its AL-AM, lib/prune.py): channel scores are standardized within each layer
    and module (liar.pipeline.global_budgets: attention channels squared first, as FLAP does, and averaged per
    head after standardizing), then one ascending ranking of all units of all layers removes units in that
    order, skipping any that would overshoot the parameter target by more than half the cheapest unit (a unit
    weighs its parameters: FLAP's 512/3 head-to-neuron weight on LLaMA-7B), each layer keeping `min_keep` of its
    heads and neurons.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from liar.models.base import LayerSizes
from liar.structure import LayerShape


@dataclass(frozen=True)
class Budget:
    attn_units: int  # attention units removed
    neurons: int  # FFN neurons removed (from every expert, in a mixture of experts)
    experts: int = 0  # whole experts removed (mixture of experts, PruneConfig.expert_ratio)
    predicted: tuple[float, float] | None = None  # allocation 'error': the relative LIAR error (attn, mlp) expected

    def removed_params(self, shape: LayerShape, gqa: str) -> int:
        return self.attn_units * shape.attn_unit_cost(gqa) + self.neurons * shape.neuron_cost


def uniform(
    shape: LayerShape, ratio: float, gqa: str, min_keep: float, heads_ok: Callable[[int], bool] = lambda h: True
) -> Budget:
    """`heads_ok(num_heads)`: head counts the exported config can express (the nearest such count is used)."""
    target = ratio * shape.block_params
    unit_cost = shape.attn_unit_cost(gqa)
    max_units = shape.attn_units(gqa) - shape.min_attn_units(gqa, min_keep)
    ideal = ratio * shape.attn_params / unit_cost
    allowed = [u for u in range(max_units + 1) if heads_ok(shape.heads_after(gqa, u))] or [0]
    units = min(allowed, key=lambda u: (abs(u - ideal), u))
    max_neurons = shape.sizes.ffn - shape.min_neurons(min_keep)
    neurons = round((target - units * unit_cost) / shape.neuron_cost)
    return Budget(attn_units=units, neurons=min(max(neurons, 0), max_neurons))


def standardized(scores: torch.Tensor) -> torch.Tensor:
    """(scores − mean) / std within one layer's module: FLAP's normalisation before its global ranking."""
    x = scores.double()
    return (x - x.mean()) / x.std().clamp_min(1e-12 * float(x.abs().max()) + 1e-300)


def global_(
    shapes: list[LayerShape], attn_scores: list[torch.Tensor], ffn_scores: list[torch.Tensor],
    ratio: float, gqa: str, min_keep: float,
) -> list[Budget]:
    """attn_scores[l]: one (comparable across layers) score per attention unit of layer l; ffn_scores[l]: one per
    neuron. The lowest scores go first."""
    candidates = []  # (score, layer, kind, cost)
    for layer, shape in enumerate(shapes):
        candidates += [(float(z), layer, "attn", shape.attn_unit_cost(gqa)) for z in attn_scores[layer].sort().values]
        candidates += [(float(z), layer, "ffn", shape.neuron_cost) for z in ffn_scores[layer].sort().values]
    candidates.sort(key=lambda c: c[0])
    target = ratio * sum(s.block_params for s in shapes)
    slack = min(c[3] for c in candidates) / 2  # overshoot at most half the cheapest unit
    units = [0] * len(shapes)
    neurons = [0] * len(shapes)
    removed = 0
    for _, layer, kind, cost in candidates:
        if removed + cost > target + slack:
            continue
        shape = shapes[layer]
        if kind == "attn" and units[layer] < shape.attn_units(gqa) - shape.min_attn_units(gqa, min_keep):
            units[layer] += 1
        elif kind == "ffn" and neurons[layer] < shape.sizes.ffn - shape.min_neurons(min_keep):
            neurons[layer] += 1
        else:
            continue
        removed += cost
    return [Budget(attn_units=u, neurons=n) for u, n in zip(units, neurons, strict=True)]


DEPTH_SPREAD = 0.5


def depth_ratios(layers: int, ratio: float) -> list[float]:
    """Per-layer ratios rising linearly with depth around `ratio` (capped below 1)."""
    ramp = [1 - DEPTH_SPREAD + 2 * DEPTH_SPREAD * i / max(layers - 1, 1) for i in range(layers)]
    return [min(ratio * r, 0.99) for r in ramp]


@dataclass(frozen=True)
class Curve:
    """One module's relative LIAR error after removing steps[i] units (steps[0] = 0, increasing; errors[0] = 0)."""

    steps: list[int]
    errors: list[float]
    weight: float = 1.0  # relative error → perturbation of the residual stream


def _interpolate(steps: list[int], errors: list[float], units: int) -> float:
    for (k0, e0), (k1, e1) in zip(zip(steps, errors), zip(steps[1:], errors[1:])):
        if k0 <= units <= k1:
            return e0 + (e1 - e0) * (units - k0) / (k1 - k0)
    raise ValueError(f"{units} units is beyond the curve's last step {steps[-1]}")


def _convex_marginals(curve: Curve) -> list[float]:
    """Per-unit marginal weighted errors, made non-decreasing (the lower convex hull, pool adjacent violators)."""
    per_unit = [curve.weight * (_interpolate(curve.steps, curve.errors, k + 1)
                                - _interpolate(curve.steps, curve.errors, k)) for k in range(curve.steps[-1])]
    blocks: list[list[float]] = []  # [sum, count]
    for m in per_unit:
        blocks.append([m, 1])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
            total, count = blocks.pop()
            blocks[-1][0] += total
            blocks[-1][1] += count
    return [total / count for total, count in blocks for _ in range(count)]


def by_error(shapes: list[LayerShape], attn: list[Curve], mlp: list[Curve], ratio: float, gqa: str) -> list[Budget]:
    """Remove units in order of least marginal weighted error per parameter until `ratio` of the block
    parameters is gone (within half the cheapest unit). Curves end at what `min_keep` lets each module give."""
    candidates = []  # (error per parameter, layer, kind, k, cost)
    for layer, shape in enumerate(shapes):
        for kind, curve, cost in (("attn", attn[layer], shape.attn_unit_cost(gqa)),
                                  ("ffn", mlp[layer], shape.neuron_cost)):
            candidates += [(m / cost, layer, kind, k, cost) for k, m in enumerate(_convex_marginals(curve))]
    candidates.sort()
    target = ratio * sum(s.block_params for s in shapes)
    slack = min(min(s.attn_unit_cost(gqa), s.neuron_cost) for s in shapes) / 2
    removed, taken, closed = 0, {}, set()
    for _, layer, kind, k, cost in candidates:
        if (layer, kind) in closed or taken.get((layer, kind), 0) != k:
            continue
        if removed + cost > target + slack:
            closed.add((layer, kind))  # its later units are dearer still: keep the module in its own order
            continue
        taken[layer, kind] = k + 1
        removed += cost
    budgets = []
    for layer in range(len(shapes)):
        units, neurons = taken.get((layer, "attn"), 0), taken.get((layer, "ffn"), 0)
        budgets.append(Budget(attn_units=units, neurons=neurons,
                              predicted=(_interpolate(attn[layer].steps, attn[layer].errors, units),
                                         _interpolate(mlp[layer].steps, mlp[layer].errors, neurons))))
    return budgets


def sizes_after(shape: LayerShape, budget: Budget, gqa: str) -> LayerSizes:
    """The widths a layer will have once `budget` is removed."""
    kv = shape.sizes.num_kv_heads - (0 if shape.attn_mode(gqa) == "per-group" else budget.attn_units)
    experts = None if shape.sizes.experts is None else shape.sizes.experts - budget.experts
    return LayerSizes(num_heads=shape.heads_after(gqa, budget.attn_units), num_kv_heads=kv,
                      ffn=shape.sizes.ffn - budget.neurons, experts=experts)
