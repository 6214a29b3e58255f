"""BERT family on tiny random models: shapes and biases, physical pruning == masked reconstruction,
export (stock for FFN-only, liar.load_pruned once heads go), and padding excluded from the statistics."""

from __future__ import annotations

import copy
import json
import string

import pytest
import torch
import transformers

import liar
from liar.stats import GramStats
from liar.structure import heads_to_channels
from tests.conftest import TEXT
from tests.test_pipeline import masked_dense

BERT_TINY = {"vocab_size": 128, "hidden_size": 48, "num_attention_heads": 6, "intermediate_size": 96,
             "num_hidden_layers": 2, "max_position_embeddings": 128, "hidden_dropout_prob": 0.0,
             "attention_probs_dropout_prob": 0.0}
HEAD_DIM = 8
SENTENCES = [s.strip() + "." for s in TEXT.split(".") if s.strip()][:12]
FAST = {"nsamples": 12, "seqlen": 128, "batch_size": 4}


def tiny_bert(cls=transformers.BertForSequenceClassification, seed: int = 0, **overrides):
    """A random-init BERT with uneven channel scales (so criteria and reconstruction have work to do)."""
    torch.manual_seed(seed)
    model = cls(transformers.BertConfig(**{**BERT_TINY, **overrides}))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2 and "embeddings" not in name:
                p.mul_(torch.rand(p.shape[1]) * 2 + 0.2)
    return model.eval()


def bert_tokenizer():
    """A character-level tokenizer with BERT's special tokens ([CLS] text [SEP], [PAD] = 0)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    vocab = {t: i for i, t in enumerate(specials + list(string.printable))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2),
                                                                                                ("[SEP]", 3)])
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]",
                                                cls_token="[CLS]", sep_token="[SEP]")


def encode(texts=SENTENCES[:6]):
    return bert_tokenizer()(texts, padding=True, return_tensors="pt")


def outputs(model, enc=None):
    enc = enc if enc is not None else encode()
    with torch.no_grad():
        return model(**enc).logits.double()


def prune_copy(model, calibration=SENTENCES, **config):
    pruned = copy.deepcopy(model)
    report = liar.prune(pruned, None, liar.PruneConfig(**{**FAST, **config}), tokenizer=bert_tokenizer(),
                        calibration=calibration)
    return pruned, report


def test_shapes_biases_and_refreshed_attention():
    model = tiny_bert()
    pruned, report = prune_copy(model, ratio=0.4)
    assert report.model["architecture"] == "bert" and report.calibration["nsamples"] == 12
    assert report.calibration["tokens"] == sum(len(s) + 2 for s in SENTENCES)  # real tokens only, no padding
    for layer, rep in zip(pruned.bert.encoder.layer, report.layers):
        heads, neurons = len(rep.attn.kept), len(rep.mlp.kept)
        assert 0 < heads < 6 and 0 < neurons < 96
        attn = layer.attention.self
        for lin in (attn.query, attn.key, attn.value):
            assert lin.weight.shape == (heads * HEAD_DIM, 48) and lin.bias.shape == (heads * HEAD_DIM,)
        assert layer.attention.output.dense.weight.shape == (48, heads * HEAD_DIM)
        assert layer.intermediate.dense.weight.shape == (neurons, 48)
        assert layer.intermediate.dense.bias.shape == (neurons,)
        assert layer.output.dense.weight.shape == (48, neurons)
        assert layer.attention.output.dense.bias.shape == layer.output.dense.bias.shape == (48,)
        assert (attn.num_attention_heads, attn.attention_head_size, attn.all_head_size) == (heads, 8, heads * 8)
    assert abs(report.model["block_fraction_removed"] - 0.4) < 0.03
    assert torch.isfinite(outputs(pruned)).all()


def test_kept_query_key_value_rows_and_biases_are_the_dense_ones():
    model = tiny_bert()
    pruned, report = prune_copy(model, ratio=0.4)
    for big, small, rep in zip(model.bert.encoder.layer, pruned.bert.encoder.layer, report.layers):
        rows = heads_to_channels(torch.tensor(rep.attn.kept), HEAD_DIM)
        for name in ("query", "key", "value"):
            b, s = getattr(big.attention.self, name), getattr(small.attention.self, name)
            assert torch.equal(s.weight, b.weight[rows]) and torch.equal(s.bias, b.bias[rows])
        kept = torch.tensor(rep.mlp.kept)
        assert torch.equal(small.intermediate.dense.bias, big.intermediate.dense.bias[kept])


@pytest.mark.parametrize("reconstruct", ["liar", "bias", "none"])
@pytest.mark.parametrize("allocation", ["uniform", "depth", "error", "global"])
def test_physical_pruning_equals_masked_reconstruction(reconstruct, allocation):
    dense = tiny_bert()
    selection = "reconstruction" if reconstruct == "liar" and allocation == "error" else "criterion"
    pruned, report = prune_copy(dense, ratio=0.35, reconstruct=reconstruct, allocation=allocation, selection=selection)
    expected, got = outputs(masked_dense(dense, pruned, report, HEAD_DIM)), outputs(pruned)
    assert float((got - expected).abs().max()) < 1e-5 * float(expected.abs().max())


@pytest.mark.parametrize("cls", [transformers.BertModel, transformers.BertForMaskedLM])
def test_other_bert_heads(cls):
    model = tiny_bert(cls)
    pruned, report = prune_copy(model, ratio=0.3)
    assert report.model["architecture"] == "bert"
    with torch.no_grad():
        out = pruned(**encode())
    hidden = out.last_hidden_state if cls is transformers.BertModel else out.logits
    assert torch.isfinite(hidden).all()


def prune_to(tmp_path, model, name="out", **config):
    out = tmp_path / name
    report = liar.prune(model, out, liar.PruneConfig(**{**FAST, **config}), tokenizer=bert_tokenizer(),
                        calibration=SENTENCES)
    return out, report


def test_ffn_only_pruning_reloads_with_stock_transformers(tmp_path):
    model = tiny_bert()
    out, report = prune_to(tmp_path, model, ratio=0.05)  # 5% rounds to no head (one head is 17% of attention)
    assert report.output["stock_loadable"] and all(len(l.attn.kept) == 6 for l in report.layers)
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "bert" and config["intermediate_size"] < 96
    stock = transformers.AutoModelForSequenceClassification.from_pretrained(out)
    torch.testing.assert_close(outputs(stock), outputs(model), rtol=0, atol=1e-6)


@pytest.mark.parametrize("allocation", ["uniform", "global"])
def test_head_pruned_bert_loads_with_liar_and_is_refused_by_stock(tmp_path, allocation):
    model = tiny_bert()
    out, report = prune_to(tmp_path, model, ratio=0.4, allocation=allocation)
    assert not report.output["stock_loadable"] and "BertConfig" in report.warnings[0]
    assert any(len(l.attn.kept) < 6 for l in report.layers)  # uniform allocation is not held to stock heads
    reloaded = liar.load_pruned(out)
    torch.testing.assert_close(outputs(reloaded), outputs(model), rtol=0, atol=1e-6)
    for layer, rep in zip(reloaded.bert.encoder.layer, report.layers):
        attn = layer.attention.self
        assert (attn.num_attention_heads, attn.attention_head_size) == (len(rep.attn.kept), HEAD_DIM)
    with pytest.raises((ValueError, KeyError), match="liar_pruned"):
        transformers.AutoModelForSequenceClassification.from_pretrained(out)


@pytest.mark.parametrize("allocation, ratio", [("uniform", 0.05), ("uniform", 0.4), ("global", 0.4)])
def test_folder_to_folder_streaming_matches_in_memory_pruning(tmp_path, allocation, ratio):
    model = tiny_bert()
    source = tmp_path / "tiny-bert"
    model.save_pretrained(source)
    bert_tokenizer().save_pretrained(source)
    config = liar.PruneConfig(**FAST, ratio=ratio, allocation=allocation)
    report = liar.prune(source, tmp_path / "out", config, calibration=SENTENCES)
    in_memory, expected = prune_copy(model, ratio=ratio, allocation=allocation)
    assert [l.attn.kept for l in report.layers] == [l.attn.kept for l in expected.layers]
    assert report.output["stock_loadable"] == expected.output["stock_loadable"] == (ratio < 0.1)
    torch.testing.assert_close(outputs(liar.load_pruned(tmp_path / "out")), outputs(in_memory), rtol=0, atol=1e-5)


def recording_prune(monkeypatch, model, **config):
    """Prune a copy of `model`, keeping every GramStats the pipeline creates (in creation order)."""
    created = []
    zeros = GramStats.zeros.__func__
    calibration = SENTENCES[:9] + ["Fine.", "No!", "A quiet film."]  # lengths 5..100 characters

    def recording(cls, *args, **kwargs):
        created.append(zeros(cls, *args, **kwargs))
        return created[-1]

    monkeypatch.setattr(GramStats, "zeros", classmethod(recording))
    pruned, report = prune_copy(model, calibration, **config)
    monkeypatch.undo()
    return pruned, report, created


def test_padding_is_excluded_from_the_statistics(monkeypatch):
    """One sentence per batch (no padding at all) vs all twelve in one batch padded to the longest (a quarter
    of its tokens are padding)."""
    model = tiny_bert()
    one, report_one, stats_one = recording_prune(monkeypatch, model, ratio=0.4, batch_size=1)
    many, report_many, stats_many = recording_prune(monkeypatch, model, ratio=0.4, batch_size=12)
    assert report_one.calibration["padded_tokens"] == report_one.calibration["tokens"]
    assert report_many.calibration["padded_tokens"] > 1.3 * report_many.calibration["tokens"]
    assert len(stats_one) == len(stats_many) == 4  # attention and FFN consumers of both layers
    for a, b in zip(stats_one, stats_many):
        assert a.n == b.n == report_one.calibration["tokens"]
        torch.testing.assert_close(b.s, a.s, rtol=1e-5, atol=1e-4)
        torch.testing.assert_close(b.gram(), a.gram(), rtol=1e-5, atol=1e-3)
    for a, b in zip(report_one.layers, report_many.layers):
        assert a.attn.kept == b.attn.kept and a.mlp.kept == b.mlp.kept
    torch.testing.assert_close(outputs(many), outputs(one), rtol=1e-4, atol=1e-5)
