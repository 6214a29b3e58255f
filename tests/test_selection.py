"""Reconstruction-aware selection (liar.selection) and the error-curve allocation (allocation.by_error)."""

from __future__ import annotations

import pytest
import torch

import liar
from liar import allocation, criteria, selection
from liar.functional import reconstruct
from liar.stats import GramStats
from liar.structure import complement
from tests.conftest import calib_ids, tiny_model
from tests.test_allocation import _shape


def _problem(D: int, d_out: int, seed: int, copies: int = 0, mixing: float = 0.3):
    """Correlated, offset inputs with uneven scales; the last `copies` channels are scaled copies of others."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(4000, D - copies, generator=g, dtype=torch.float64)
    x = base @ (torch.randn(D - copies, D - copies, generator=g, dtype=torch.float64) * mixing
                + torch.eye(D - copies, dtype=torch.float64)) * (torch.rand(D - copies, generator=g) * 3 + 0.2)
    x = torch.cat([x, 4 * x[:, :copies]], 1) + torch.randn(D, generator=g, dtype=torch.float64)
    stats = GramStats.zeros(D, backend="torch")
    stats.update(x.float())
    W = torch.randn(d_out, D, generator=g)
    return stats, W, torch.randn(d_out, generator=g)


@pytest.mark.parametrize("intercept", [True, False])
def test_error_curve_is_the_liar_error_of_each_kept_set(intercept):
    """Undamped, the greedy curve after k removals is exactly LIAR's relative error keeping the rest."""
    stats, W, b = _problem(53, 17, seed=1)
    units, groups = selection.neuron_units(53)
    run = selection.eliminate(W, stats, units, groups, 29, intercept, alpha=0.0, max_steps=29, bias=b)
    assert run.steps == list(range(30)) and sorted(run.order) == sorted(set(run.order))
    for k in (1, 7, 18, 29):
        kept = complement(torch.tensor(run.order[:k]), 53)
        r = reconstruct(stats, W, b if intercept else None, kept, alpha=0.0, intercept=intercept,
                        solve_dtype=torch.float64, backend="torch")
        measured = r.errors["liar"] if intercept else _no_intercept_error(stats, W, b, kept, r)
        assert run.errors[k] == pytest.approx(measured, rel=2e-3, abs=1e-9)
    assert all(e1 >= e0 for e0, e1 in zip(run.errors, run.errors[1:]))


def _no_intercept_error(stats, W, b, kept, r):
    """The bias-free fit keeps b; its relative error is measured against the output with b."""
    from liar.reconstruct import output_energy

    x_energy = output_energy(stats.G, stats.s, stats.n, W, b, torch.float64)
    return r.errors["liar"] * output_energy(stats.G, stats.s, stats.n, W, None, torch.float64) / x_energy


def test_heads_in_steps_of_several_units_match_the_solve():
    """Units of several channels (a head), several units a step: each point is still the exact error."""
    stats, W, b = _problem(6 * 5, 11, seed=2)
    units = torch.arange(30).reshape(6, 5)
    run = selection.eliminate(W, stats, units, torch.zeros(6, dtype=torch.long), 4, alpha=0.0, max_steps=2, bias=b)
    assert run.steps == [0, 2, 4]
    kept = complement(units[run.order].reshape(-1), 30)
    r = reconstruct(stats, W, b, kept, alpha=0.0, solve_dtype=torch.float64, backend="torch")
    assert run.errors[-1] == pytest.approx(r.errors["liar"], rel=2e-3)


def test_redundant_channels_go_first_whatever_they_carry():
    """Scaled copies carry the most variance (the criterion keeps them) but LIAR rebuilds them exactly."""
    stats, W, b = _problem(41, 9, seed=3, copies=6, mixing=0.0)
    kept = selection.neurons_by_error(W, stats, 6, intercept=True, alpha=1e-6)
    by_error = reconstruct(stats, W, b, kept, alpha=1e-6, solve_dtype=torch.float64, backend="torch")
    flap = criteria.channel_scores("flap", W, stats, torch.Generator())
    by_flap = reconstruct(stats, W, b, flap.topk(35).indices.sort().values, alpha=1e-6,
                          solve_dtype=torch.float64, backend="torch")
    assert by_error.errors["liar"] < 1e-6 and by_flap.errors["liar"] > 1e-3


def test_per_group_removes_the_same_number_from_every_group_and_whole_groups_whole():
    shape = _shape()  # 6 query heads of head_dim 16 in 2 KV groups of 3
    stats, W, _ = _problem(96, 13, seed=4)
    plan = selection.heads_by_error(W, stats, shape, "per-group", 2, intercept=True, alpha=1e-2)
    assert plan.kept_kv.tolist() == [0, 1] and [int((plan.kept_heads // 3 == g).sum()) for g in (0, 1)] == [1, 1]
    plan = selection.heads_by_error(W, stats, shape, "whole-groups", 1, intercept=True, alpha=1e-2)
    assert plan.kept_kv.numel() == 1 and plan.kept_heads.tolist() == [3 * int(plan.kept_kv) + i for i in range(3)]


def test_convex_marginals_are_the_lower_hull():
    curve = allocation.Curve(steps=[0, 1, 2, 3, 4], errors=[0.0, 3.0, 4.0, 6.0, 10.0], weight=2.0)
    assert allocation._convex_marginals(curve) == pytest.approx([4.0, 4.0, 4.0, 8.0])  # (6+2+4)/3 pooled, ×2
    assert sum(allocation._convex_marginals(curve)) == pytest.approx(2.0 * 10.0)


def test_error_allocation_honours_the_budget_minimum_and_the_curves():
    shapes = [_shape(intermediate_size=200)] * 4
    most_attn = shapes[0].attn_units("per-group") - shapes[0].min_attn_units("per-group", 0.1)
    most_ffn = 200 - shapes[0].min_neurons(0.1)
    steps = list(range(0, most_ffn + 1, 20)) + ([most_ffn] if most_ffn % 20 else [])
    # layer 2's neurons cost almost nothing to remove, the others' errors grow quadratically
    mlp = [allocation.Curve(steps, [(1e-6 if i == 2 else 1.0) * (k / 200) ** 2 for k in steps]) for i in range(4)]
    attn = [allocation.Curve(list(range(most_attn + 1)), [0.5 * k for k in range(most_attn + 1)]) for _ in range(4)]
    budgets = allocation.by_error(shapes, attn, mlp, ratio=0.4, gqa="per-group")
    removed = sum(b.removed_params(s, "per-group") for b, s in zip(budgets, shapes))
    assert abs(removed - 0.4 * sum(s.block_params for s in shapes)) <= shapes[0].neuron_cost / 2
    assert budgets[2].neurons == most_ffn  # emptied down to the minimum first
    assert all(b.neurons <= most_ffn and b.attn_units <= most_attn for b in budgets)
    shares = [budgets[i].neurons for i in (0, 1, 3)]
    assert max(shares) - min(shares) <= 20  # equal curves, equal shares up to one measured step
    assert budgets[0].predicted == (0.0, pytest.approx((budgets[0].neurons / 200) ** 2, rel=0.05))


def test_error_allocation_end_to_end_predicts_the_measured_error(tmp_path):
    """Streaming prune with allocation 'error' and reconstruction selection: the report's predicted error per
    module is the measured one (damping apart), the ratio holds, and the output loads."""
    model = tiny_model()
    model.save_pretrained(tmp_path / "m")
    config = liar.PruneConfig(ratio=0.4, allocation="error", selection="reconstruction", nsamples=16, seqlen=64)
    report = liar.prune(tmp_path / "m", tmp_path / "o", config, calibration=calib_ids(16, 64))
    assert abs(report.model["block_fraction_removed"] - 0.4) < 0.02
    for layer in report.layers:
        for module in (layer.attn, layer.mlp):
            assert module.predicted == pytest.approx(module.errors["liar"], rel=0.05, abs=1e-4)
    pruned = liar.load_pruned(tmp_path / "o")
    assert len({layer.mlp.down_proj.in_features for layer in pruned.model.layers}) > 1


def test_reconstruction_selection_needs_liar():
    with pytest.raises(ValueError, match="selection='reconstruction'.*--reconstruct liar"):
        liar.PruneConfig(selection="reconstruction", reconstruct="bias")


def test_reconstruction_selection_and_error_allocation_with_auto_alpha():
    """alpha='auto' picks λ after the units are chosen: selection and curves damp with the default meanwhile."""
    config = liar.PruneConfig(ratio=0.4, allocation="error", selection="reconstruction", alpha="auto", nsamples=16,
                              seqlen=64, batch_size=4)
    report = liar.prune(tiny_model(), None, config, calibration=calib_ids(16, 64))
    pruned = [m for l in report.layers for m in (l.attn, l.mlp) if m.units_after < m.units_before]
    assert pruned and all(isinstance(m.alpha, float) and m.alpha_heldout for m in pruned)
    assert abs(report.model["block_fraction_removed"] - 0.4) < 0.02
