"""LIAR reconstruction inside Torch-Pruning (extra `liar[torch-pruning]`).

Torch-Pruning (TP) chooses what to remove; before it slices, every linear whose *input* channels the
group removes is rewritten so its kept columns (and a bias) absorb what the removed channels carried:

    from liar.integrations.torch_pruning import TPReconstructor, traceable
    with traceable(model):                                   # TP's graph build needs this on transformers 5
        pruner = tp.pruner.BasePruner(model, example_inputs, importance=..., ...)
    rec = TPReconstructor(model, mode="liar")                # or "bias" / "none"
    rec.calibrate(batches)                                   # dense statistics of every nn.Linear input
    for group in pruner.step(interactive=True):
        rec.apply(group)                                     # reconstruct the consumers TP is about to cut
        group.prune()

Covered consumers: `o_proj` (heads), `down_proj` (FFN channels), and with hidden-size pruning every linear
reading the residual stream through a norm (q/k/v, gate/up) and the LM head. What happens at the norms:
TP slices each RMSNorm weight; the kept channels are then normalized by the RMS over the kept channels
instead of all channels, a per-token scale no linear map can undo, so those consumers are reconstructed
on the dense model's normalized inputs and that rescale is left as is. A linear whose weight is shared
(a tied LM head) is left to TP: rewriting it would rewrite the embedding too.

`python -m liar.integrations.torch_pruning --model DIR --out DIR ...` runs TP's LLM-example pruning with it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator

import torch
from torch import nn

from liar.functional import GramStats, reconstruct
from liar.integrations import require
from liar.integrations.tp_tracing import traceable

tp = require("torch_pruning", "torch-pruning", "torch-pruning")

log = logging.getLogger(__name__)
MODES = ("liar", "bias", "none")


def _batch_inputs(batch) -> tuple[torch.Tensor, torch.Tensor | None]:
    if isinstance(batch, torch.Tensor):
        return batch, None
    return batch["input_ids"], batch.get("attention_mask")


class TPReconstructor:
    """Calibration statistics of every nn.Linear input, and reconstruction of the ones TP cuts.

    mode: liar (least-squares interpolation), bias (FLAP mean compensation) or none (TP alone).
    bias_allowed(name, linear): may this linear gain a bias? Where not, the bias-free LIAR variant is used
    (and `bias` mode leaves it as plain slicing). Default: every linear (a stock LLaMA config then needs
    `attention_bias` / `mlp_bias`, which `stock_config.finalize_config` sets).
    """

    def __init__(self, model: nn.Module, mode: str = "liar", alpha: float = 1e-2, backend: str = "auto",
                 bias_allowed: Callable[[str, nn.Linear], bool] | None = None):
        if mode not in MODES:
            raise ValueError(f"mode={mode!r}; choose one of {', '.join(MODES)}")
        self.model, self.mode, self.alpha, self.backend = model, mode, alpha, backend
        self.bias_allowed = bias_allowed or (lambda name, lin: True)
        self.names = {m: n for n, m in model.named_modules() if isinstance(m, nn.Linear)}
        self.stats: dict[nn.Linear, GramStats] = {}
        self.errors: dict[str, dict[str, float]] = {}  # per reconstructed linear: relative error none/bias/liar

    # ---- statistics ------------------------------------------------------------------------------
    def _shared_weights(self) -> set[nn.Linear]:
        counts: dict[int, int] = {}
        for _, p in self.model.named_parameters(remove_duplicate=False):
            counts[id(p)] = counts.get(id(p), 0) + 1
        return {m for m in self.names if counts.get(id(m.weight), 0) > 1}

    @torch.no_grad()
    def calibrate(self, batches: Iterable) -> None:
        """Accumulate G = Σ x xᵀ, s = Σ x of every linear's input over `batches` (token-id tensors [B, L] or
        dicts with input_ids / attention_mask). Linears fed the same tensor share one set of statistics."""
        if self.mode == "none":
            return
        skip = self._shared_weights()
        leader: dict[nn.Linear, nn.Linear] = {}
        seen: dict[int, tuple[torch.Tensor, nn.Linear]] = {}
        mask_box: list[torch.Tensor | None] = [None]

        def hook(module, args):
            if module in skip:
                return
            x = args[0]
            if module not in leader:  # first batch: find linears reading the very same tensor
                first = seen.setdefault(id(x), (x, module))[1]
                leader[module] = first
            owner = leader[module]
            if owner is not module:
                return
            stats = self.stats.get(module)
            if stats is None:
                stats = self.stats[module] = GramStats.zeros(x.shape[-1], device=x.device, backend=self.backend)
            stats.update(x, mask_box[0])

        handles = [m.register_forward_pre_hook(hook) for m in self.names]
        try:
            for batch in batches:
                ids, mask = _batch_inputs(batch)
                mask_box[0] = mask
                self.model(input_ids=ids, attention_mask=mask)
                seen.clear()
        finally:
            for h in handles:
                h.remove()
        for module, owner in leader.items():
            self.stats[module] = self.stats[owner]
        log.info("calibrated %d linears (%d distinct inputs)", len(leader), len(set(leader.values())))

    # ---- reconstruction --------------------------------------------------------------------------
    @staticmethod
    def input_cuts(group) -> dict[nn.Linear, torch.Tensor]:
        """The linears whose input channels `group` removes, with those channel indices."""
        cuts: dict[nn.Linear, set[int]] = {}
        for dep, idxs in group:
            module = dep.target.module
            if isinstance(module, nn.Linear) and getattr(dep.handler, "__name__", "") == "prune_in_channels":
                cuts.setdefault(module, set()).update(int(i) for i in idxs)
        return {m: torch.tensor(sorted(s), dtype=torch.long) for m, s in cuts.items()}

    @torch.no_grad()
    def apply(self, group) -> None:
        """Rewrite the kept columns (and bias) of every linear `group` cuts; TP's slice then keeps them."""
        if self.mode == "none":
            return
        narrowed: dict[int, tuple[GramStats, torch.Tensor]] = {}
        for module, removed in self.input_cuts(group).items():
            stats = self.stats.get(module)
            if stats is None:
                continue  # a tied weight, or never reached by the calibration forward
            if stats.dim != module.in_features:
                raise RuntimeError(
                    f"{self.names[module]} has {module.in_features} inputs but was calibrated with {stats.dim}: "
                    "it was pruned outside TPReconstructor.apply; call apply(group) before every group.prune()"
                )
            kept = self._reconstruct(module, removed, stats)
            narrowed.setdefault(id(stats), (stats, kept))
        for stats, kept in narrowed.values():
            self._narrow(stats, kept)

    def _reconstruct(self, module: nn.Linear, removed: torch.Tensor, stats: GramStats) -> torch.Tensor:
        """Rewrite `module` in place; returns its kept input channels."""
        name = self.names[module]
        keep_mask = torch.ones(module.in_features, dtype=torch.bool)
        keep_mask[removed] = False
        kept = keep_mask.nonzero().squeeze(1)
        with_bias = module.bias is not None or self.bias_allowed(name, module)
        if self.mode == "bias" and not with_bias:
            return kept
        r = reconstruct(stats, module.weight, module.bias, kept, mode=self.mode, alpha=self.alpha,
                        intercept=with_bias, backend=self.backend)
        module.weight[:, kept.to(module.weight.device)] = r.weight.to(module.weight.dtype)
        if r.bias is not None:
            bias = r.bias.to(module.weight.dtype)
            if module.bias is None:
                module.bias = nn.Parameter(bias, requires_grad=module.weight.requires_grad)
            else:
                module.bias.copy_(bias)
        self.errors[name] = r.errors
        return kept

    def _narrow(self, old: GramStats, kept: torch.Tensor) -> None:
        """Keep the statistics of the surviving channels, for later steps of an iterative pruner."""
        k = kept.to(old.G.device)
        narrowed = GramStats(G=old.gram()[k[:, None], k].clone(), s=old.s[k].clone(), n=old.n, backend=old.backend)
        for m, s in self.stats.items():
            if s is old:
                self.stats[m] = narrowed

    def step(self, pruner) -> Iterator:
        """`for group in rec.step(pruner): group.prune()`: TP's interactive step, reconstructed."""
        for group in pruner.step(interactive=True):
            self.apply(group)
            yield group


__all__ = ["TPReconstructor", "traceable"]

if __name__ == "__main__":
    from liar.integrations.tp_cli import main

    main()
