"""Criteria, GQA unit selection and ratio allocation."""

from __future__ import annotations

import pytest
import torch

from liar import allocation, criteria
from liar.models import architecture_for
from liar.stats import GramStats
from liar.structure import LayerShape, attn_unit_scores, select_heads, select_neurons
from tests.conftest import tiny_model


def _stats(x):
    s = GramStats.zeros(x.shape[1], backend="torch")
    s.update(x)
    return s


def test_criteria_follow_their_definitions():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(500, 7, generator=g) * torch.arange(1, 8) + torch.arange(7)
    W = torch.randn(5, 7, generator=g)
    st = _stats(x)
    col = W.double().norm(dim=0)
    torch.testing.assert_close(criteria.CRITERIA["magnitude"](W, st, g), col)
    rms = (x.double().square().mean(0)).sqrt()
    torch.testing.assert_close(criteria.CRITERIA["wanda"](W, st, g), W.double().abs().sum(0) * rms, rtol=1e-5, atol=0)
    var = x.double().var(0, unbiased=False)
    torch.testing.assert_close(criteria.CRITERIA["flap"](W, st, g), var * col.square(), rtol=1e-5, atol=0)
    r1 = criteria.CRITERIA["random"](W, st, torch.Generator().manual_seed(5))
    r2 = criteria.CRITERIA["random"](W, st, torch.Generator().manual_seed(5))
    torch.testing.assert_close(r1, r2)


def test_unknown_criterion_raises():
    with pytest.raises(ValueError, match="unknown criterion"):
        criteria.channel_scores("taylor", torch.ones(2, 2), None, None)


def _shape(**overrides):
    model = tiny_model(**overrides)
    arch = architecture_for(model)
    layer = arch.layer_list(model)[0]
    return LayerShape.of(arch, layer, arch.head_dim(model.config))


def test_per_group_keeps_the_same_heads_per_group():
    shape = _shape()  # 6 query heads in 2 KV groups of 3
    scores = torch.tensor([0.1, 5.0, 3.0, 4.0, 0.2, 0.3])
    plan = select_heads(scores, shape, "per-group", units_removed=1)
    assert plan.kept_heads.tolist() == [1, 2, 3, 5]  # the weakest head of each group goes
    assert plan.kept_kv.tolist() == [0, 1]
    slots = attn_unit_scores(scores, shape, "per-group")
    assert slots.tolist() == pytest.approx([0.15, 1.65, 4.5])


def test_whole_groups_drop_kv_groups():
    shape = _shape()
    plan = select_heads(torch.tensor([0.1, 5.0, 3.0, 4.0, 9.0, 8.0]), shape, "whole-groups", units_removed=1)
    assert plan.kept_kv.tolist() == [1] and plan.kept_heads.tolist() == [3, 4, 5]


def test_mha_per_group_prunes_heads_with_their_kv():
    shape = _shape(num_attention_heads=4, num_key_value_heads=4)
    assert shape.attn_mode("per-group") == "whole-groups"
    plan = select_heads(torch.tensor([3.0, 1.0, 2.0, 4.0]), shape, "per-group", units_removed=2)
    assert plan.kept_heads.tolist() == [0, 3] and plan.kept_kv.tolist() == [0, 3]


@pytest.mark.parametrize("ratio", [0.1, 0.25, 0.5, 0.7])
@pytest.mark.parametrize("gqa", ["per-group", "whole-groups"])
def test_uniform_budget_hits_the_ratio(ratio, gqa):
    shape = _shape(intermediate_size=400)
    budget = allocation.uniform(shape, ratio, gqa, min_keep=0.1)
    removed = budget.removed_params(shape, gqa)
    assert abs(removed - ratio * shape.block_params) <= shape.neuron_cost / 2 + 1
    assert budget.attn_units <= shape.attn_units(gqa) - shape.min_attn_units(gqa, 0.1)


def test_global_budget_hits_target_and_keeps_every_layer_alive():
    shapes = [_shape(intermediate_size=200)] * 4
    g = torch.Generator().manual_seed(0)
    # Layer 0 scores are tiny: a global rule wants to empty it, the minimum keeps it alive.
    attn = [torch.rand(3, generator=g).sort().values * (1e-6 if i == 0 else 1) for i in range(4)]
    ffn = [torch.rand(200, generator=g) * (1e-6 if i == 0 else 1) for i in range(4)]
    budgets = allocation.global_(shapes, attn, ffn, ratio=0.4, gqa="per-group", min_keep=0.1)
    removed = sum(b.removed_params(s, "per-group") for b, s in zip(budgets, shapes))
    target = 0.4 * sum(s.block_params for s in shapes)
    assert abs(removed - target) <= shapes[0].neuron_cost
    assert budgets[0].neurons == 200 - shapes[0].min_neurons(0.1)
    assert budgets[0].attn_units == shapes[0].attn_units("per-group") - shapes[0].min_attn_units("per-group", 0.1)
    assert len({b.neurons for b in budgets}) > 1  # non-uniform


def test_select_neurons_keeps_the_strongest_sorted():
    kept = select_neurons(torch.tensor([5.0, 1.0, 4.0, 0.5, 3.0]), removed=2)
    assert kept.tolist() == [0, 2, 4]


def test_depth_ratios_rise_with_depth_around_the_ratio():
    ratios = allocation.depth_ratios(30, 0.2)
    assert ratios[0] == pytest.approx(0.1) and ratios[-1] == pytest.approx(0.3)
    assert all(b > a for a, b in zip(ratios, ratios[1:])) and sum(ratios) / 30 == pytest.approx(0.2)
    assert max(allocation.depth_ratios(8, 0.9)) < 1


def test_flap_normalisation_is_per_layer_and_scale_free():
    """FLAP standardizes each layer's scores on their own: a layer whose criterion is 1000x larger (deeper layers'
    activations grow) ranks the same against the others as before."""
    g = torch.Generator().manual_seed(4)
    scores = torch.rand(37, generator=g, dtype=torch.float64) ** 3
    z = allocation.standardized(scores)
    assert abs(float(z.mean())) < 1e-12 and abs(float(z.std()) - 1) < 1e-12
    assert torch.allclose(allocation.standardized(1000 * scores + 5), z)
