"""End-to-end pruning on tiny random models: shapes, GQA, and physical pruning == masked reconstruction."""

from __future__ import annotations

import copy

import pytest
import torch

import liar
from liar.models import architecture_for
from liar.models.base import set_linear
from liar.structure import heads_to_channels
from tests.conftest import VOCAB, calib_ids, tiny_model

FAST = dict(nsamples=8, seqlen=48, batch_size=4)


def logits(model, ids=None):
    ids = ids if ids is not None else calib_ids(3, 40, seed=7)
    with torch.no_grad():
        return model(input_ids=ids).logits.double()


def prune_copy(model, **config):
    pruned = copy.deepcopy(model)
    report = liar.prune(pruned, None, liar.PruneConfig(**{**FAST, **config}), calibration=calib_ids())
    return pruned, report


@pytest.mark.parametrize("gqa", ["per-group", "whole-groups"])
def test_gqa_shapes(gqa):
    model = tiny_model()
    pruned, report = prune_copy(model, ratio=0.3, gqa=gqa)
    for layer, rep in zip(pruned.model.layers, report.layers):
        attn = layer.self_attn
        heads, kv = len(rep.attn.kept), len(rep.attn.kept_kv)
        assert attn.q_proj.out_features == heads * 16 and attn.o_proj.in_features == heads * 16
        assert attn.k_proj.out_features == attn.v_proj.out_features == kv * 16
        assert attn.num_key_value_groups == heads // kv
        assert layer.mlp.down_proj.in_features == len(rep.mlp.kept) == layer.mlp.gate_proj.out_features
        if gqa == "per-group":
            assert kv == 2 and heads == 4  # one head of each group of three
        else:
            assert kv == 1 and heads == 3 and rep.attn.kept == [3 * rep.attn.kept_kv[0] + i for i in range(3)]
    assert abs(report.model["block_fraction_removed"] - 0.3) < 0.03
    assert torch.isfinite(logits(pruned)).all()


def masked_dense(dense, pruned, report, head_dim: int = 16):
    """The dense model with pruned channels' consumer columns zeroed and the reconstruction applied."""
    masked = copy.deepcopy(dense)
    arch = architecture_for(masked)
    for layer, small, rep in zip(arch.layer_list(masked), arch.layer_list(pruned), report.layers):
        for path, kept in ((arch.o, heads_to_channels(torch.tensor(rep.attn.kept), head_dim)),
                           (arch.ffn_out, torch.tensor(rep.mlp.kept))):
            big, new = layer.get_submodule(path), small.get_submodule(path)
            weight = torch.zeros_like(big.weight)
            weight[:, kept] = new.weight
            set_linear(layer, path, weight, new.bias)
    return masked


@pytest.mark.parametrize("reconstruct", ["liar", "bias", "none"])
@pytest.mark.parametrize("gqa", ["per-group", "whole-groups"])
def test_physical_pruning_equals_masked_reconstruction(reconstruct, gqa):
    dense = tiny_model()
    pruned, report = prune_copy(dense, ratio=0.35, gqa=gqa, reconstruct=reconstruct)
    expected = logits(masked_dense(dense, pruned, report))
    got = logits(pruned)
    assert float((got - expected).abs().max()) < 1e-4 * float(expected.abs().max())


def test_reconstruction_errors_are_ordered_in_every_layer():
    _, report = prune_copy(tiny_model(), ratio=0.4)
    for layer in report.layers:
        for module in (layer.attn, layer.mlp):
            e = module.errors
            assert e["liar"] <= e["bias"] + 1e-9 <= e["none"] + 2e-9
            assert module.lam is not None and module.lam > 0 and module.tokens == 8 * 48


def test_liar_output_closer_to_dense_than_bias_and_none():
    dense = tiny_model()
    target = logits(dense, calib_ids())
    err = {}
    for mode in ("liar", "bias", "none"):
        pruned, _ = prune_copy(dense, ratio=0.3, reconstruct=mode)
        err[mode] = float((logits(pruned, calib_ids()) - target).norm())
    assert err["liar"] < err["bias"] < err["none"]


@pytest.mark.parametrize("family", ["mistral", "qwen2"])
def test_other_llama_family_members(family):
    model = tiny_model(family)
    pruned, report = prune_copy(model, ratio=0.3)
    attn = pruned.model.layers[0].self_attn
    if family == "qwen2":  # native q/k/v biases are sliced with their rows
        assert attn.q_proj.bias.shape[0] == attn.q_proj.out_features
        assert attn.k_proj.bias.shape[0] == attn.k_proj.out_features
    assert report.model["architecture"] == family
    assert logits(pruned).shape[-1] == VOCAB


def test_global_allocation_is_non_uniform_and_meets_the_ratio():
    model = tiny_model(num_hidden_layers=3, intermediate_size=160)
    pruned, report = prune_copy(model, ratio=0.4, allocation="global", criterion="wanda")
    widths = {len(l.mlp.kept) for l in report.layers} | {-len(l.attn.kept) for l in report.layers}
    assert len(widths) > 2
    assert abs(report.model["block_fraction_removed"] - 0.4) < 0.02
    assert torch.isfinite(logits(pruned)).all()


@pytest.mark.parametrize("criterion", ["magnitude", "wanda", "flap", "random"])
def test_every_criterion_runs(criterion):
    pruned, report = prune_copy(tiny_model(), ratio=0.3, criterion=criterion)
    assert report.config["criterion"] == criterion and torch.isfinite(logits(pruned)).all()


def test_random_criterion_is_seeded():
    _, a = prune_copy(tiny_model(), criterion="random", seed=3)
    _, b = prune_copy(tiny_model(), criterion="random", seed=3)
    _, c = prune_copy(tiny_model(), criterion="random", seed=4)
    kept = lambda r: [l.mlp.kept for l in r.layers]  # noqa: E731
    assert kept(a) == kept(b) != kept(c)
