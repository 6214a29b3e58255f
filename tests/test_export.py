"""Real smaller checkpoints: stock reload, per-layer widths, atomic writes, the input folder left alone."""

from __future__ import annotations

import copy
import hashlib
import json

import pytest
import torch
import transformers

import liar
from tests.conftest import calib_ids, char_tokenizer, tiny_model
from tests.test_pipeline import FAST, logits


def prune_to(tmp_path, model, name="out", **config):
    out = tmp_path / name
    report = liar.prune(model, out, liar.PruneConfig(**{**FAST, **config}), tokenizer=char_tokenizer(),
                        calibration=calib_ids())
    return out, report


def test_uniform_llama_reloads_with_stock_transformers(tmp_path):
    model = tiny_model()
    out, report = prune_to(tmp_path, model, ratio=0.3)
    assert report.output["stock_loadable"]
    config = json.loads((out / "config.json").read_text())
    assert config["attention_bias"] and config["mlp_bias"]  # the LIAR intercept travels as a bias
    assert config["num_attention_heads"] == 4 and config["num_key_value_heads"] == 2
    assert "liar_layer_sizes" not in config
    stock = transformers.AutoModelForCausalLM.from_pretrained(out)
    torch.testing.assert_close(logits(stock), logits(model), rtol=0, atol=1e-6)
    assert transformers.AutoTokenizer.from_pretrained(out)("ab")["input_ids"] == [12, 13]
    saved = json.loads((out / "liar_report.json").read_text())
    assert liar.PruneReport.load(out / "liar_report.json").layers[0].attn.kept == report.layers[0].attn.kept
    assert saved["backends"]["gram_update"] and saved["versions"]["torch"]


def test_no_bias_variant_is_bias_free(tmp_path):
    model = tiny_model()
    out, _ = prune_to(tmp_path, model, ratio=0.3, intercept=False)
    config = json.loads((out / "config.json").read_text())
    assert not config["attention_bias"] and not config["mlp_bias"]
    stock = transformers.AutoModelForCausalLM.from_pretrained(out)
    assert stock.model.layers[0].self_attn.o_proj.bias is None
    torch.testing.assert_close(logits(stock), logits(model), rtol=0, atol=1e-6)


def test_mistral_intercept_needs_liar_loader_no_bias_is_stock(tmp_path):
    model = tiny_model("mistral")
    out, report = prune_to(tmp_path, model, ratio=0.3)
    assert not report.output["stock_loadable"] and report.warnings
    torch.testing.assert_close(logits(liar.load_pruned(out)), logits(model), rtol=0, atol=1e-6)
    model = tiny_model("mistral")
    out, report = prune_to(tmp_path, model, name="nobias", ratio=0.3, intercept=False)
    assert report.output["stock_loadable"]
    stock = transformers.AutoModelForCausalLM.from_pretrained(out)
    torch.testing.assert_close(logits(stock), logits(model), rtol=0, atol=1e-6)


def test_per_layer_widths_load_with_liar(tmp_path):
    model = tiny_model(num_hidden_layers=3, intermediate_size=160)
    out, report = prune_to(tmp_path, model, ratio=0.4, allocation="global", criterion="wanda")
    assert not report.output["stock_loadable"]
    sizes = json.loads((out / "config.json").read_text())["liar_layer_sizes"]
    assert [s["intermediate_size"] for s in sizes] == [len(l.mlp.kept) for l in report.layers]
    reloaded = liar.load_pruned(out)
    torch.testing.assert_close(logits(reloaded), logits(model), rtol=0, atol=1e-6)
    with pytest.raises((ValueError, KeyError), match="liar_pruned"):
        transformers.AutoModelForCausalLM.from_pretrained(out)  # refused loudly, never re-initialized
    assert transformers.AutoTokenizer.from_pretrained(out)("ab")["input_ids"] == [12, 13]


def _digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_input_folder_untouched_and_output_never_inside_it(model_dir, tmp_path):
    before = _digest(model_dir)
    with pytest.raises(ValueError, match="is the input .* or inside it"):
        liar.prune(model_dir, model_dir / "pruned", liar.PruneConfig(**FAST), calibration=calib_ids())
    out = tmp_path / "pruned"
    liar.prune(model_dir, out, liar.PruneConfig(**FAST), calibration=calib_ids())
    assert _digest(model_dir) == before
    assert (out / "model.safetensors.index.json").is_file() and (out / "config.json").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folders left behind


def test_existing_output_refused_then_replaced_with_overwrite(model_dir, tmp_path):
    out = tmp_path / "pruned"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="--overwrite"):
        liar.prune(model_dir, out, liar.PruneConfig(**FAST), calibration=calib_ids())
    with pytest.raises(ValueError, match="not a liar output"):  # --overwrite replaces only liar's own outputs
        liar.prune(model_dir, out, liar.PruneConfig(**FAST, overwrite=True), calibration=calib_ids())
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    (out / "keep.txt").unlink()
    liar.prune(model_dir, out, liar.PruneConfig(**FAST, overwrite=True), calibration=calib_ids())  # empty: free
    first = (out / "liar_report.json").read_text()
    liar.prune(model_dir, out, liar.PruneConfig(**FAST, ratio=0.4, overwrite=True), calibration=calib_ids())
    assert (out / "liar_report.json").read_text() != first


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    model = tiny_model()

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("liar.io.writer.write_shard", boom)
    with pytest.raises(OSError, match="is full .* free space"):
        prune_to(tmp_path, copy.deepcopy(model), ratio=0.3)
    assert list(tmp_path.iterdir()) == []


def test_output_is_world_readable_in_the_asked_dtype(model_dir, tmp_path):
    import stat

    from liar.io.shards import ShardReader

    out = tmp_path / "o"
    report = liar.prune(model_dir, out, liar.PruneConfig(**FAST, save_dtype="bfloat16"), calibration=calib_ids())
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    assert {f.name: stat.S_IMODE(f.stat().st_mode) for f in out.iterdir()} == {f.name: 0o644 for f in out.iterdir()}
    reader = ShardReader(out)
    assert {reader.get(k).dtype for k in reader.keys()} == {torch.bfloat16}
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    assert report.output["dtype"] == "bfloat16" and "MiB of bfloat16 weights" in report.summary()
    assert transformers.AutoModelForCausalLM.from_pretrained(out).dtype == torch.bfloat16


def test_report_times_account_for_the_whole_run(model_dir, tmp_path):
    """Phases sum to the total, the total is the run's wall time, and the blocks' stages (read, forward,
    statistics, solve, write) sum to the blocks phase: all within 5%, and saved in the file itself."""
    import time

    prune, config, ids = liar.prune, liar.PruneConfig(**{**FAST, "nsamples": 16}), calib_ids(16, 96)  # imported
    began = time.perf_counter()
    report = prune(model_dir, tmp_path / "o", config, calibration=ids)
    wall = time.perf_counter() - began
    saved = liar.PruneReport.load(tmp_path / "o" / "liar_report.json")
    assert saved.timings == report.timings and {"load", "setup", "blocks", "finish"} <= set(saved.timings)
    assert abs(saved.timings["total"] - wall) < max(0.05 * wall, 0.01)  # after the stamp: the final rename
    for layer in saved.layers:
        assert set(layer.stages) == {"read", "forward", "statistics", "solve", "write"}
        assert layer.seconds > 0 and abs(sum(layer.stages.values()) - layer.seconds) < 1e-9
    # what no stage holds is the loop itself (the progress bar): 5%, or 2 ms a block on a run this short
    slack = max(0.05 * saved.timings["blocks"], 0.002 * len(saved.layers))
    assert abs(sum(l.seconds for l in saved.layers) - saved.timings["blocks"]) < slack
