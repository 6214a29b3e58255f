"""`liar prune --dry-run`: the plan read off the shapes equals what a real run then does."""

from __future__ import annotations

import json

import pytest

from liar.cli import main
from liar.report import PruneReport
from tests.conftest import char_tokenizer, tiny_model

CALIB = ["--nsamples", "4", "--seqlen", "32", "--batch-size", "2"]


def last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.parametrize("family, options", [
    ("llama", ["--ratio", "0.3"]),  # stock export: attention_bias / mlp_bias switched on, zeros everywhere
    ("llama", ["--ratio", "0.45", "--no-bias", "--gqa", "whole-groups"]),
    ("qwen2", ["--ratio", "0.3", "--reconstruct", "bias"]),  # an o_proj bias Qwen2's config cannot carry
])
def test_dry_run_plan_equals_the_run(family, options, tmp_path, text_file, capsys):
    source = tmp_path / family
    tiny_model(family, num_hidden_layers=3, intermediate_size=100).save_pretrained(source)
    char_tokenizer().save_pretrained(source)
    common = ["prune", "--model", str(source), "--calib", str(text_file), *CALIB, *options, "--json"]
    assert main([*common, "--dry-run"]) == 0
    printed = capsys.readouterr().out
    plan = last_json(printed)
    assert "nothing was calibrated or written" in printed and not (tmp_path / "out").exists()
    assert main([*common, "--out", str(tmp_path / "out")]) == 0
    assert f"details: liar report {tmp_path / 'out'}" in capsys.readouterr().out  # the summary points onwards
    report = json.loads((tmp_path / "out" / "liar_report.json").read_text())
    assert plan["params_before"] == report["model"]["params_before"]
    assert plan["params_after"] == report["model"]["params_after"]
    assert plan["block_params_before"] == report["model"]["block_params_before"]
    assert plan["stock_loadable"] == report["output"]["stock_loadable"]
    for row, layer in zip(plan["layers"], PruneReport.load(tmp_path / "out" / "liar_report.json").layers,
                          strict=True):
        assert row["after"]["num_heads"] == layer.attn.units_after == len(layer.attn.kept)
        assert row["after"]["num_kv_heads"] == len(layer.attn.kept_kv)
        assert row["after"]["ffn"] == layer.mlp.units_after == len(layer.mlp.kept)


def test_global_allocation_says_it_needs_calibration(model_dir, capsys):
    assert main(["prune", "--model", str(model_dir), "--allocation", "global", "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "needs the calibration pass" in printed and "liar_pruned" in printed
