"""Warnings about a run that does what was asked but not what was meant (pure functions: strings out).

The driver logs them and keeps them in the report; nothing here fails a run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from liar.report import LayerReport

SHORTFALL = 0.02  # removed fraction this far (2 points) below --ratio is worth a warning


def removal_warnings(ratio: float, min_keep: float, removed: float, layers: Sequence[LayerReport]) -> list[str]:
    """The achieved block fraction `removed` against the asked `ratio`: nothing removed, or far too little."""
    units = sum(m.units_before - m.units_after for layer in layers for m in (layer.attn, layer.mlp))
    if layers and units == 0:
        return [f"--ratio {ratio:g} removes no head and no neuron in any layer (one unit is more than the ratio "
                f"of a block), so nothing is removed (blocks {-removed:+.1%}); raise --ratio"]
    if layers and removed <= 0:
        return [f"--ratio {ratio:g} removes {units} heads/neurons but the biases the reconstruction adds weigh "
                f"more, so the blocks do not shrink (blocks {-removed:+.1%}); raise --ratio (or, with --reconstruct "
                "liar, pass --no-bias)"]
    if ratio - removed <= SHORTFALL:
        return []
    floored = [layer.index for layer in layers if _at_floor(layer.mlp, min_keep)]
    why = (f"{len(floored)} of {len(layers)} layers keep the --min-keep {min_keep:g} floor of their neurons; "
           "lower --min-keep to remove more" if floored else
           "attention comes in whole heads (head counts the config can express); try --gqa whole-groups "
           "or --allocation global")
    return [f"--ratio {ratio:g} asked for {ratio:.1%} of the block parameters but {removed:.1%} were removed: {why}"]


def _at_floor(module, min_keep: float) -> bool:
    return module.units_after <= max(1, math.ceil(min_keep * module.units_before))


def seqlen_warnings(seqlen: int, model_config) -> list[str]:
    """A window longer than the positions the model was trained on (its outputs there are extrapolation)."""
    limit = getattr(model_config, "max_position_embeddings", None)
    if limit is None or seqlen <= limit:
        return []
    return [f"--seqlen {seqlen} exceeds the model's max_position_embeddings={limit}: positions beyond it were "
            f"never trained (and absolute position tables cannot index them); pass --seqlen {limit} or less"]


def run_warnings(config, model_config, removed: float, layers: Sequence[LayerReport]) -> list[str]:
    """Every warning about a finished prune (`config`: its PruneConfig; `removed`: block fraction removed)."""
    return (seqlen_warnings(config.seqlen, model_config)
            + removal_warnings(config.ratio, config.min_keep, removed, layers))
