"""Mixture-of-experts FFNs (Mixtral, Qwen3-MoE): per-expert statistics from routed tokens, one LIAR solve per
expert, and whole-expert removal.

The MoE output for token t is Σ_e w_te · D_e h_te over its top-k experts, h_te = act(gate_e x) · up_e x the
expert's intermediate activation and w_te the router weight. Pruning neurons of expert e changes token t's
output by w_te · (D_e h_te − D'_e h_te,R), so the fit of expert e is the weighted least-squares problem

    min Σ_t w_te² ‖D_e h_te − D'_e h_te,R‖²   over the tokens routed to e,

which is LIAR's no-intercept solve on the weighted Gram G_e = Σ_t w_te² h_te h_teᵀ (accumulated as the plain
Gram of w_te · h_te). No intercept: stock experts carry no bias, and a bias inside an expert would be scaled
by w_te anyway, so it could not be a plain bias of the block. `bias` (FLAP mean compensation) therefore has
no expert form and experts fall back to `none` under it, which the report says.

An expert with fewer routed calibration tokens than neurons it keeps has a rank-deficient Gram: it is not
solved (plain slicing, fallback recorded) and its neurons are chosen by weight magnitude.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field

import torch
from torch import nn

from liar import distributed, selection
from liar.config import PruneConfig
from liar.functional import reconstruct
from liar.models.base import Architecture, MoeSpec
from liar.report import ModuleReport
from liar.stats import GramStats

log = logging.getLogger(__name__)


@dataclass
class ExpertStats:
    """Per-expert statistics of the intermediate activations of routed tokens, weighted by the router."""

    experts: list[GramStats]  # G_e = Σ w² h hᵀ over tokens routed to e; n_e = routed tokens
    energy: torch.Tensor  # [E] fp64: Σ w² ‖D_e h‖², expert e's share of the block output energy
    total_tokens: int = 0  # real tokens seen by the block

    @classmethod
    def zeros(cls, num_experts: int, dim: int, device, backend: str) -> ExpertStats:
        return cls([GramStats.zeros(dim, device, backend) for _ in range(num_experts)],
                   torch.zeros(num_experts, dtype=torch.float64))

    @property
    def tokens(self) -> list[int]:
        return [s.n for s in self.experts]

    def update_routed(self, experts: nn.Module, args: tuple, mask: torch.Tensor | None) -> None:
        """Feed one batch from the experts module's inputs (hidden [T, H], top_k_index, top_k_weights)."""
        hidden, index, weights = args[:3]
        real = torch.ones(hidden.shape[0], dtype=torch.bool, device=hidden.device) if mask is None \
            else mask.reshape(-1).to(device=hidden.device, dtype=torch.bool)
        self.total_tokens += int(real.sum())
        for e, stats in enumerate(self.experts):
            tok, slot = torch.where((index == e) & real[:, None])
            if tok.numel() == 0:
                continue
            h = intermediate(experts, e, hidden[tok])
            wh = h * weights[tok, slot, None].to(h.dtype)
            stats.update(wh)
            y = nn.functional.linear(wh, experts.down_proj[e])
            self.energy[e] += float(y.double().square().sum())

    def check_finite(self, where: str) -> None:
        for e, stats in enumerate(self.experts):
            if stats.n:
                stats.check_finite(f"{where} expert {e}")


def intermediate(experts: nn.Module, e: int, x: torch.Tensor) -> torch.Tensor:
    """Expert e's activations act(gate x) · up x, exactly as the experts' forward computes them."""
    gate, up = nn.functional.linear(x, experts.gate_up_proj[e]).chunk(2, dim=-1)
    return experts.act_fn(gate) * up


def new_stats(spec: MoeSpec, layer: nn.Module, backend: str, sequential: bool = False) -> ExpertStats:
    if sequential:
        raise ValueError("sequential calibration is not implemented for mixture-of-experts models; use "
                         "calibration='dense'")
    if distributed.active():
        raise ValueError("mixture-of-experts pruning runs in one process; launch it without torchrun")
    experts = layer.get_submodule(spec.experts)
    return ExpertStats.zeros(experts.down_proj.shape[0], experts.down_proj.shape[-1], experts.down_proj.device,
                             backend)


@dataclass
class ExpertPlan:
    kept: torch.Tensor  # sorted neurons kept
    down: torch.Tensor  # [H, R] reconstructed down_proj of the expert
    report: dict = field(default_factory=dict)


def _solve_expert(W: torch.Tensor, stats: GramStats, keep: int, config: PruneConfig, gen: torch.Generator,
                  mode: str) -> ExpertPlan:
    """Choose and reconstruct one expert's neurons; too few routed tokens → magnitude choice, plain slicing."""
    F = W.shape[1]
    if stats.n < keep:
        kept = W.norm(dim=0).topk(keep).indices.sort().values
        errors = {} if stats.n == 0 else dict.fromkeys(("none", "liar"), _slicing_error(W, stats, kept))
        return ExpertPlan(kept, W[:, kept], {"tokens": stats.n, "kept": kept.tolist(), "errors": errors,
                                             "fallback": f"none: {stats.n} routed tokens < {keep} kept neurons"})
    kept = selection.kept_neurons(W, stats, F - keep, config, gen, intercept=False)
    if keep == F:
        return ExpertPlan(kept, W, {"tokens": stats.n, "kept": kept.tolist(), "errors": {"none": 0.0, "liar": 0.0},
                                    "fallback": None})
    r = reconstruct(stats, W, None, kept, mode=mode, alpha=config.alpha, intercept=False,
                    solve_dtype=torch.float64 if config.solve_dtype == "float64" else torch.float32,
                    backend=config.backend)
    errors = {m: r.errors[m] for m in ("none", "liar") if m in r.errors}  # "bias" has no expert form (module note)
    info = {"lam": r.info.lam, "fallback": r.info.fallback} if r.info is not None else {"fallback": None}
    return ExpertPlan(kept, r.weight, {"tokens": stats.n, "kept": kept.tolist(), "errors": errors, **info})


def _slicing_error(W: torch.Tensor, stats: GramStats, kept: torch.Tensor) -> float:
    """‖W_S h_S‖² / ‖W h‖² over the (weighted) calibration tokens: the relative error of plain slicing."""
    pruned = torch.ones(W.shape[1], dtype=torch.bool)
    pruned[kept] = False
    G, Wd = stats.gram().double(), W.double()
    W_S = Wd[:, pruned]
    return float((W_S @ G[pruned][:, pruned] * W_S).sum() / (Wd @ G * Wd).sum().clamp_min(1e-30))


def prune_experts(arch: Architecture, layer: nn.Module, stats: ExpertStats, removed: int, config: PruneConfig,
                  gen: torch.Generator) -> ModuleReport:
    """Remove `removed` neurons from every expert (the fused 3-D weights need one width), each expert chosen
    and reconstructed on its own routed tokens."""
    experts = layer.get_submodule(arch.moe.experts)
    F = experts.down_proj.shape[-1]
    keep = F - removed
    mode = "liar" if config.reconstruct == "liar" else "none"
    plans = [_solve_expert(experts.down_proj[e], s, keep, config, gen, mode) for e, s in enumerate(stats.experts)]
    for plan in plans:
        plan.report["reconstruct"] = "none" if plan.report["fallback"] else mode
    gate_up = torch.stack([torch.cat([experts.gate_up_proj[e][p.kept], experts.gate_up_proj[e][F + p.kept]])
                           for e, p in enumerate(plans)])
    down = torch.stack([p.down.to(experts.down_proj.dtype) for p in plans])
    _set_experts(experts, gate_up, down)
    report = ModuleReport(kind="mlp", units_before=F, units_after=keep, kept=[], reconstruct=config.reconstruct,
                          tokens=stats.total_tokens, errors=_block_errors(plans, stats.energy))
    report.experts = [p.report for p in plans]
    fallbacks = [e for e, p in enumerate(plans) if p.report["fallback"]]
    if fallbacks:
        log.warning("experts %s had fewer routed calibration tokens than the %d neurons they keep: sliced by weight "
                    "magnitude, not solved", fallbacks, keep)
    return report


def _block_errors(plans: list[ExpertPlan], energy: torch.Tensor) -> dict[str, float]:
    """Relative output error of the whole MoE block: expert errors weighted by their output energy."""
    total = max(float(energy.sum()), 1e-30)
    solved = [(p.report["errors"], float(energy[e])) for e, p in enumerate(plans) if p.report["errors"]]
    modes = [m for m in ("none", "liar") if all(m in err for err, _ in solved)]  # liar only where it was solved
    return {m: sum(err[m] * en for err, en in solved) / total for m in modes}


def _set_experts(experts: nn.Module, gate_up: torch.Tensor, down: torch.Tensor) -> None:
    grad = experts.down_proj.requires_grad
    experts.gate_up_proj = nn.Parameter(gate_up.contiguous(), requires_grad=grad)
    experts.down_proj = nn.Parameter(down.contiguous(), requires_grad=grad)
    experts.num_experts, experts.intermediate_dim = down.shape[0], down.shape[-1]


def expert_scores(stats: ExpertStats) -> torch.Tensor:
    """Routed-token frequency × mean routed output energy = each expert's share of the block output energy."""
    tokens = torch.tensor(stats.tokens, dtype=torch.float64)
    frequency = tokens / max(stats.total_tokens, 1)
    return frequency * stats.energy / tokens.clamp_min(1)


def drop_experts(arch: Architecture, layer: nn.Module, stats: ExpertStats, n_drop: int) -> list[int]:
    """Remove the `n_drop` experts with the lowest scores; their router rows go too, so the router's softmax
    (and its top-k normalization) now runs over the kept experts only. Returns the kept expert indices."""
    experts, router = layer.get_submodule(arch.moe.experts), layer.get_submodule(arch.moe.router)
    E = experts.down_proj.shape[0]
    if not 0 <= n_drop <= E - router.top_k:
        raise ValueError(f"cannot drop {n_drop} of {E} experts with top_k={router.top_k}: at least top_k must "
                         "stay; lower expert_ratio")
    kept = expert_scores(stats).topk(E - n_drop).indices.sort().values
    _set_experts(experts, experts.gate_up_proj[kept], experts.down_proj[kept])
    router.weight = nn.Parameter(router.weight[kept].contiguous(), requires_grad=router.weight.requires_grad)
    router.num_experts = kept.numel()
    stats.experts = [stats.experts[i] for i in kept.tolist()]
    stats.energy = stats.energy[kept]
    return kept.tolist()


# transformers' default experts kernel (grouped_mm) needs 16-byte strides: the expert width must stay a multiple
# of 8 values (bf16; 4 in fp32), or the pruned model's forward raises "strides should be multiple of 16 bytes".
WIDTH_ALIGN = 8


def aligned_neurons(width: int, removed: int) -> int:
    """Neurons to remove so that the kept width is the nearest multiple of WIDTH_ALIGN (if the width was one)."""
    if width % WIDTH_ALIGN:
        return removed
    keep = max(WIDTH_ALIGN, round((width - removed) / WIDTH_ALIGN) * WIDTH_ALIGN)
    return width - keep


def with_expert_removal(arch: Architecture, shapes, budgets: list, config: PruneConfig) -> list:
    """Uniform budgets for a mixture of experts: aligned expert widths, plus `expert_ratio` of each layer's
    experts removed whole. A dense FFN keeps its budgets."""
    if arch.moe is None:
        if config.expert_ratio:
            raise ValueError(f"expert_ratio={config.expert_ratio} applies to mixture-of-experts models; "
                             f"{arch.name} has a dense FFN: leave expert_ratio at 0")
        return budgets
    return [dataclasses.replace(b, neurons=aligned_neurons(s.sizes.ffn, b.neurons),
                                experts=round(config.expert_ratio * s.sizes.experts))
            for s, b in zip(shapes, budgets, strict=True)]


def prune_moe(arch: Architecture, layer: nn.Module, stats: ExpertStats, budget, config: PruneConfig,
              gen: torch.Generator) -> ModuleReport:
    """Drop `budget.experts` whole experts, then `budget.neurons` neurons of every kept expert."""
    if not isinstance(stats, ExpertStats):
        raise TypeError("a mixture-of-experts layer needs liar.moe.ExpertStats")
    kept_experts = drop_experts(arch, layer, stats, budget.experts) if budget.experts else None
    report = prune_experts(arch, layer, stats, budget.neurons, config, gen)
    report.kept_experts = kept_experts
    return report
