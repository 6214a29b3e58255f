"""Qwen3, Gemma 3, Phi-3 and OPT on tiny random models (odd sizes, GQA where the family has it):
physical pruning == the masked dense model with the same reconstruction, per-consumer error order, the
export (stock where the family's config can describe it, liar.load_pruned otherwise), streaming ==
in-memory."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import transformers

import liar
from liar.models import architecture_for
from tests.conftest import VOCAB, calib_ids, char_tokenizer
from tests.test_pipeline import FAST, logits, masked_dense
from tests.test_streaming import streamed_equals_in_memory

COMMON = dict(vocab_size=VOCAB, num_hidden_layers=2, max_position_embeddings=256, tie_word_embeddings=False)
# (config class, model class, sizes, head_dim, stock-loadable with the intercept, with intercept=False)
FAMILIES = {
    "qwen3": (transformers.Qwen3Config, transformers.Qwen3ForCausalLM,
              dict(hidden_size=44, intermediate_size=94, num_attention_heads=6, num_key_value_heads=2, head_dim=14),
              14, False, True),
    # head_dim 32 > hidden / heads = 11, as Gemma 3's 256 exceeds hidden / heads; tied, scaled embeddings;
    # one sliding-window layer and one global layer.
    "gemma3": (transformers.Gemma3TextConfig, transformers.Gemma3ForCausalLM,
               dict(hidden_size=44, intermediate_size=94, num_attention_heads=4, num_key_value_heads=2, head_dim=32,
                    sliding_window=16, layer_types=["sliding_attention", "full_attention"], tie_word_embeddings=True),
               32, False, True),
    "phi3": (transformers.Phi3Config, transformers.Phi3ForCausalLM,
             dict(hidden_size=60, intermediate_size=94, num_attention_heads=6, num_key_value_heads=2, pad_token_id=0),
             10, False, True),
    # Plain multi-head attention: pruned heads leave what OPTConfig can describe, whatever the bias.
    "opt": (transformers.OPTConfig, transformers.OPTForCausalLM,
            dict(hidden_size=44, ffn_dim=94, num_attention_heads=4, word_embed_proj_dim=44, pad_token_id=1),
            11, False, False),
}


def tiny(family: str, seed: int = 0) -> transformers.PreTrainedModel:
    """A random-init model with uneven channel scales (so criteria and reconstruction have work to do)."""
    config_cls, model_cls, sizes, *_ = FAMILIES[family]
    torch.manual_seed(seed)
    model = model_cls(config_cls(**{**COMMON, **sizes}))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2 and "embed" not in name:
                p.mul_(torch.rand(p.shape[1]) * 4 + 0.2)
            elif p.dim() == 1 and "bias" in name:
                p.normal_(0, 0.02)  # OPT initializes biases to zero; give them values (the std of its weights)
    return model.eval()


def prune_copy(model, **config):
    pruned = copy.deepcopy(model)
    report = liar.prune(pruned, None, liar.PruneConfig(**{**FAST, **config}), calibration=calib_ids())
    return pruned, report


def close(got, expected, rel=1e-4):
    """Logits agree to `rel` of their largest magnitude (fp32 forward of two different weight layouts)."""
    assert float((got - expected).abs().max()) <= rel * float(expected.abs().max())


@pytest.mark.parametrize("reconstruct", ["liar", "bias", "none"])
@pytest.mark.parametrize("family", FAMILIES)
def test_pruned_equals_masked_dense(family, reconstruct):
    dense = tiny(family)
    pruned, report = prune_copy(dense, ratio=0.35, reconstruct=reconstruct)
    assert report.model["architecture"] == family
    assert all(len(l.attn.kept) < l.attn.units_before and len(l.mlp.kept) < l.mlp.units_before
               for l in report.layers)
    close(logits(pruned), logits(masked_dense(dense, pruned, report, head_dim=FAMILIES[family][3])))


@pytest.mark.parametrize("family", FAMILIES)
def test_errors_are_ordered_per_consumer(family):
    _, report = prune_copy(tiny(family), ratio=0.4)
    for layer in report.layers:
        for m in (layer.attn, layer.mlp):
            assert 0 < m.errors["liar"] <= m.errors["bias"] + 1e-9 <= m.errors["none"] + 2e-9, (m.kind, m.errors)


@pytest.mark.parametrize("family", FAMILIES)
def test_pruned_shapes(family):
    pruned, report = prune_copy(tiny(family), ratio=0.35)
    arch, head_dim = architecture_for(pruned), FAMILIES[family][3]
    for layer, rep in zip(arch.layer_list(pruned), report.layers):
        sizes = arch.layer_sizes(layer, head_dim)
        assert (sizes.num_heads, sizes.num_kv_heads, sizes.ffn) == (
            len(rep.attn.kept), len(rep.attn.kept_kv), len(rep.mlp.kept))
        o = arch.attn_consumer(layer)
        rows = sum(lin.out_features for lin in arch.linears(layer, "attn").values()) - o.out_features
        assert rows == (sizes.num_heads + 2 * sizes.num_kv_heads) * head_dim


@pytest.mark.parametrize("intercept", [True, False])
@pytest.mark.parametrize("family", FAMILIES)
def test_export_reloads(family, intercept, tmp_path):
    model = tiny(family)
    out = tmp_path / "out"
    report = liar.prune(model, out, liar.PruneConfig(**FAST, ratio=0.3, intercept=intercept),
                        tokenizer=char_tokenizer(), calibration=calib_ids())
    stock = FAMILIES[family][4 if intercept else 5]
    assert report.output["stock_loadable"] == stock
    if stock:
        reloaded, info = transformers.AutoModelForCausalLM.from_pretrained(out, output_loading_info=True)
        assert not info["missing_keys"] and not info["mismatched_keys"] and not info["unexpected_keys"]
    else:
        reloaded = liar.load_pruned(out)
        assert json.loads((out / "config.json").read_text())["model_type"] == "liar_pruned"
    torch.testing.assert_close(logits(reloaded), logits(model), rtol=0, atol=1e-6)


def test_opt_ffn_only_pruning_is_stock(tmp_path):
    model = tiny("opt")
    out = tmp_path / "out"
    report = liar.prune(model, out, liar.PruneConfig(**FAST, ratio=0.05), tokenizer=char_tokenizer(),
                        calibration=calib_ids())
    assert report.output["stock_loadable"] and all(len(l.attn.kept) == 4 for l in report.layers)
    stock = transformers.AutoModelForCausalLM.from_pretrained(out)
    assert stock.model.decoder.layers[0].fc2.in_features < 94
    torch.testing.assert_close(logits(stock), logits(model), rtol=0, atol=1e-6)


def test_opt_without_biases_gets_them_all_from_one_flag(tmp_path):
    """enable_bias covers attention and FFN: switched on for an FFN intercept, every linear gets a bias."""
    config_cls, model_cls, sizes, *_ = FAMILIES["opt"]
    torch.manual_seed(0)
    model = model_cls(config_cls(**{**COMMON, **sizes, "enable_bias": False})).eval()
    out = tmp_path / "out"
    report = liar.prune(model, out, liar.PruneConfig(**FAST, ratio=0.05), tokenizer=char_tokenizer(),
                        calibration=calib_ids())
    assert report.output["stock_loadable"] and json.loads((out / "config.json").read_text())["enable_bias"]
    stock, info = transformers.AutoModelForCausalLM.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"]  # transformers would zero-fill a missing bias silently
    torch.testing.assert_close(logits(stock), logits(model), rtol=0, atol=1e-6)


@pytest.mark.parametrize("family", FAMILIES)
def test_sequential_calibration_equals_masked_dense(family):
    dense = tiny(family)
    pruned, report = prune_copy(dense, ratio=0.35, calibration="sequential")
    close(logits(pruned), logits(masked_dense(dense, pruned, report, head_dim=FAMILIES[family][3])))


@pytest.mark.parametrize("family", FAMILIES)
def test_streaming_equals_in_memory(family, tmp_path):
    streamed_equals_in_memory(tiny(family), liar.PruneConfig(**FAST, ratio=0.35), tmp_path)
