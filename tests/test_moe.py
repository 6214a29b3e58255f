"""Mixture of experts (Mixtral, Qwen3-MoE) on tiny random models: the router-weighted per-expert statistics
against a brute-force fit, pruned == masked dense, an expert without routed tokens, expert removal with the
router re-normalized over the kept experts, export and streaming."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import transformers

import liar
from liar import moe
from liar.functional import reconstruct
from liar.models import architecture_for
from liar.models.base import set_linear
from liar.stats import GramStats
from liar.structure import heads_to_channels
from tests.conftest import VOCAB, calib_ids, char_tokenizer
from tests.test_families import close
from tests.test_pipeline import FAST, logits
from tests.test_streaming import streamed_equals_in_memory

HEAD_DIM = 14
COMMON = dict(vocab_size=VOCAB, hidden_size=44, num_hidden_layers=2, num_attention_heads=6, num_key_value_heads=2,
              head_dim=HEAD_DIM, num_experts_per_tok=2, max_position_embeddings=256, tie_word_embeddings=False)
# Expert widths are multiples of 8: transformers' default grouped_mm experts kernel needs 16-byte strides.
FAMILIES = {
    "mixtral": (transformers.MixtralConfig, transformers.MixtralForCausalLM,
                dict(intermediate_size=48, num_local_experts=5)),
    "qwen3_moe": (transformers.Qwen3MoeConfig, transformers.Qwen3MoeForCausalLM,
                  dict(moe_intermediate_size=48, num_experts=5, norm_topk_prob=False)),
}


def tiny_moe(family: str, seed: int = 0):
    config_cls, model_cls, sizes = FAMILIES[family]
    torch.manual_seed(seed)
    model = model_cls(config_cls(**{**COMMON, **sizes}))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2 and "embed" not in name and "gate.weight" not in name:
                p.normal_(0, 0.05).mul_(torch.rand(p.shape[-1]) * 4 + 0.2)  # experts start empty: fill them
            elif "gate.weight" in name:
                p.normal_(0, 0.3)  # a router that actually prefers some experts per token
    return model.eval()


def prune_copy(model, calibration=None, **config):
    pruned = copy.deepcopy(model)
    calibration = calib_ids() if calibration is None else calibration
    report = liar.prune(pruned, None, liar.PruneConfig(**{**FAST, **config}), calibration=calibration)
    return pruned, report


def test_weighted_gram_is_the_weighted_least_squares_fit():
    """Σ w² h hᵀ (accumulated as the Gram of w·h) and the no-intercept solve at α = 0 give the W' minimizing
    Σ_t w_t² ‖W h_t − W' h_t,R‖², computed here by lstsq on the rows scaled by w_t."""
    gen = torch.Generator().manual_seed(3)
    T, F, H = 301, 23, 13
    h = torch.randn(T, F, generator=gen, dtype=torch.float64) * (torch.rand(F, generator=gen) * 3 + 0.1)
    h[:, 5] = 0.7 * h[:, 2] - 0.4 * h[:, 9] + 0.05 * torch.randn(T, generator=gen, dtype=torch.float64)
    w = torch.rand(T, generator=gen, dtype=torch.float64)  # router weights in (0, 1)
    W = torch.randn(H, F, generator=gen, dtype=torch.float64)
    kept = torch.tensor([0, 1, 3, 4, 6, 7, 8, 9, 10, 12, 13, 15, 17, 18, 20, 21, 22])
    stats = GramStats.zeros(F)
    stats.update((w[:, None] * h).float())
    r = reconstruct(stats, W.float(), None, kept, mode="liar", alpha=0.0, intercept=False,
                    solve_dtype=torch.float64)
    X, Y = w[:, None] * h[:, kept], w[:, None] * (h @ W.T)
    expected = torch.linalg.lstsq(X, Y).solution.T
    torch.testing.assert_close(r.weight.double(), expected, rtol=0, atol=2e-4 * float(expected.abs().max()))
    assert r.bias is None


@pytest.mark.parametrize("family", FAMILIES)
def test_expert_stats_equal_brute_force_over_routed_tokens(family):
    model = tiny_moe(family)
    block = model.model.layers[0].mlp
    x = torch.randn(37, 44, generator=torch.Generator().manual_seed(5))
    mask = torch.rand(37, generator=torch.Generator().manual_seed(6)) > 0.2
    with torch.no_grad():
        _, weights, index = block.gate(x)
        stats = moe.ExpertStats.zeros(5, 48, "cpu", "auto")
        stats.update_routed(block.experts, (x, index, weights), mask)
        for e in range(5):
            tok, slot = torch.where((index == e) & mask[:, None])
            gate, up = (x[tok].double() @ block.experts.gate_up_proj[e].double().T).chunk(2, dim=-1)
            h = block.experts.act_fn(gate) * up * weights[tok, slot, None].double()
            assert stats.experts[e].n == tok.numel()
            torch.testing.assert_close(stats.experts[e].gram().double(), h.T @ h, rtol=1e-5, atol=1e-6)
            energy = (h @ block.experts.down_proj[e].double().T).square().sum()
            torch.testing.assert_close(stats.energy[e], energy, rtol=1e-5, atol=0)
    assert sum(stats.tokens) == 2 * int(mask.sum()) and stats.total_tokens == int(mask.sum())


def masked_moe(dense, pruned, report):
    """The dense model with pruned heads' o_proj columns and pruned expert neurons' down_proj columns zeroed,
    and the reconstructed weights in the kept columns."""
    masked = copy.deepcopy(dense)
    arch = architecture_for(masked)
    for layer, small, rep in zip(arch.layer_list(masked), arch.layer_list(pruned), report.layers):
        kept = heads_to_channels(torch.tensor(rep.attn.kept), HEAD_DIM)
        weight = torch.zeros_like(layer.self_attn.o_proj.weight)
        weight[:, kept] = small.self_attn.o_proj.weight
        set_linear(layer, "self_attn.o_proj", weight, small.self_attn.o_proj.bias)
        down = torch.zeros_like(layer.mlp.experts.down_proj)
        for e, expert in enumerate(rep.mlp.experts):
            down[e][:, expert["kept"]] = small.mlp.experts.down_proj[e]
        layer.mlp.experts.down_proj.data = down
    return masked


@pytest.mark.parametrize("reconstruct", ["liar", "none"])
@pytest.mark.parametrize("family", FAMILIES)
def test_pruned_equals_masked_dense(family, reconstruct):
    dense = tiny_moe(family)
    pruned, report = prune_copy(dense, ratio=0.3, reconstruct=reconstruct)
    for rep, layer in zip(report.layers, pruned.model.layers):
        width = rep.mlp.units_after
        assert width == layer.mlp.experts.down_proj.shape[-1] < 48 and width % 8 == 0  # grouped_mm alignment
        assert layer.mlp.experts.gate_up_proj.shape == (5, 2 * width, 44) and len(rep.attn.kept) < 6
        assert len(rep.mlp.experts) == 5 and all(len(e["kept"]) == width for e in rep.mlp.experts)
        assert len({tuple(e["kept"]) for e in rep.mlp.experts}) > 1  # each expert chooses its own neurons
    close(logits(pruned), logits(masked_moe(dense, pruned, report)))


@pytest.mark.parametrize("family", FAMILIES)
def test_expert_errors_liar_below_none(family):
    _, report = prune_copy(tiny_moe(family), ratio=0.4)
    for rep in report.layers:
        assert sum(e["tokens"] for e in rep.mlp.experts) == 2 * rep.mlp.tokens == 2 * 8 * 48
        for e in rep.mlp.experts:
            assert e["fallback"] is None and 0 < e["errors"]["liar"] < e["errors"]["none"]
        assert 0 < rep.mlp.errors["liar"] < rep.mlp.errors["none"]
        assert rep.attn.errors["liar"] <= rep.attn.errors["bias"] + 1e-9 <= rep.attn.errors["none"] + 2e-9


def test_an_expert_without_routed_tokens_is_sliced_not_solved(caplog):
    model = tiny_moe("mixtral")
    arch = architecture_for(model)
    layer = model.model.layers[0]
    x = torch.randn(60, 44, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        logits_ = layer.mlp.gate(x)[0]
        logits_[:, 0] = -torch.inf  # expert 0 is never routed to
        weights, index = torch.softmax(logits_, dim=-1).topk(2, dim=-1)
        stats = moe.ExpertStats.zeros(5, 48, "cpu", "auto")
        stats.update_routed(layer.mlp.experts, (x, index, weights / weights.sum(-1, keepdim=True)), None)
        before = layer.mlp.experts.down_proj[0].clone()
        report = moe.prune_experts(arch, layer, stats, 24, liar.PruneConfig(), torch.Generator().manual_seed(0))
    first, rest = report.experts[0], report.experts[1:]
    assert first["tokens"] == 0 and first["fallback"] == "none: 0 routed tokens < 24 kept neurons"
    assert first["errors"] == {}
    assert first["kept"] == before.norm(dim=0).topk(24).indices.sort().values.tolist()  # by magnitude
    torch.testing.assert_close(layer.mlp.experts.down_proj[0], before[:, first["kept"]], rtol=0, atol=0)
    assert all(e["fallback"] is None and e["tokens"] >= 24 for e in rest)
    assert torch.isfinite(layer.mlp.experts.down_proj).all() and "experts [0]" in caplog.text


def test_too_few_calibration_tokens_fall_back_per_expert():
    pruned, report = prune_copy(tiny_moe("mixtral"), calib_ids(1, 96), ratio=0.3, nsamples=1, seqlen=96)
    experts = [(e, rep.mlp.units_after) for rep in report.layers for e in rep.mlp.experts]
    assert all((e["fallback"] is None) == (e["tokens"] >= keep) for e, keep in experts)
    experts = [e for e, _ in experts]
    assert any(e["fallback"] for e in experts) and any(e["fallback"] is None for e in experts)
    for e in experts:  # a sliced expert's error is plain slicing's, counted in the block error too
        assert 0 < e["errors"]["liar"] <= e["errors"]["none"] and (e["fallback"] is None) == (
            e["errors"]["liar"] < e["errors"]["none"])
    assert torch.isfinite(logits(pruned)).all()


@pytest.mark.parametrize("family", FAMILIES)
def test_expert_removal_renormalizes_the_router_over_kept_experts(family):
    dense = tiny_moe(family)
    pruned, report = prune_copy(dense, ratio=0.3, expert_ratio=0.4, reconstruct="none")
    x = torch.randn(2, 9, 44, generator=torch.Generator().manual_seed(4))
    for layer, small, rep in zip(dense.model.layers, pruned.model.layers, report.layers):
        kept = rep.mlp.kept_experts
        assert len(kept) == 3 and small.mlp.gate.weight.shape == (3, 44)
        torch.testing.assert_close(small.mlp.gate.weight, layer.mlp.gate.weight[kept], rtol=0, atol=0)
        # the dense block with the dropped experts' logits at −inf and the kept experts' weights as pruned
        block = copy.deepcopy(layer.mlp)
        down = torch.zeros_like(block.experts.down_proj)
        for i, e in enumerate(kept):
            down[e][:, rep.mlp.experts[i]["kept"]] = small.mlp.experts.down_proj[i]
        block.experts.down_proj.data = down
        with torch.no_grad():
            router_logits = x.reshape(-1, 44) @ block.gate.weight.T
            router_logits[:, [e for e in range(5) if e not in kept]] = -torch.inf
            top, idx = torch.softmax(router_logits, dim=-1).topk(2, dim=-1)
            if family == "mixtral" or block.gate.norm_topk_prob:
                top = top / top.sum(-1, keepdim=True)
            expected = block.experts(x.reshape(-1, 44), idx, top)
            torch.testing.assert_close(small.mlp(x).reshape(-1, 44), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("intercept", [True, False])
@pytest.mark.parametrize("family", FAMILIES)
def test_export_reloads(family, intercept, tmp_path):
    model = tiny_moe(family)
    out = tmp_path / "out"
    report = liar.prune(model, out, liar.PruneConfig(**FAST, ratio=0.3, intercept=intercept, expert_ratio=0.2),
                        tokenizer=char_tokenizer(), calibration=calib_ids())
    stock = family == "qwen3_moe" or not intercept  # Mixtral's config has no flag for an o_proj bias
    assert report.output["stock_loadable"] == stock
    config = json.loads((out / "config.json").read_text())
    if stock:
        assert config["num_local_experts"] == 4  # both configs save the count under this name
        reloaded, info = transformers.AutoModelForCausalLM.from_pretrained(out, output_loading_info=True)
        assert not info["missing_keys"] and not info["mismatched_keys"] and not info["unexpected_keys"]
    else:
        assert config["model_type"] == "liar_pruned"
        reloaded = liar.load_pruned(out)
    torch.testing.assert_close(logits(reloaded), logits(model), rtol=0, atol=1e-6)


@pytest.mark.parametrize("family", FAMILIES)
def test_streaming_equals_in_memory(family, tmp_path):
    streamed_equals_in_memory(tiny_moe(family), liar.PruneConfig(**FAST, ratio=0.3, expert_ratio=0.2), tmp_path)


def test_dense_models_refuse_expert_ratio():
    from tests.conftest import tiny_model

    with pytest.raises(ValueError, match="dense FFN"):
        prune_copy(tiny_model(), expert_ratio=0.25)


def test_dense_layers_in_a_moe_model_are_refused_clearly():
    config_cls, model_cls, sizes = FAMILIES["qwen3_moe"]
    model = model_cls(config_cls(**{**COMMON, **sizes, "mlp_only_layers": [1]})).eval()
    with pytest.raises(ValueError, match="mlp_only_layers"):
        prune_copy(model)


def test_auto_damping_is_refused_clearly():
    with pytest.raises(ValueError, match="alpha='auto' is not implemented for mixture-of-experts"):
        prune_copy(tiny_moe("mixtral"), alpha="auto", batch_size=2)
