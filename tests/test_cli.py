"""The command line on a tiny model folder, and bad input: a clear error and no partial output."""

from __future__ import annotations

import json
import re

import pytest
import torch
import transformers

from liar.cli import main
from tests.conftest import char_tokenizer, tiny_model

PRUNE = ["prune", "--nsamples", "4", "--seqlen", "32", "--batch-size", "2"]


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def test_prune_then_eval(capsys, model_dir, text_file, tmp_path):
    out = tmp_path / "pruned"
    code, stdout, _ = run(capsys, *PRUNE, "--model", model_dir, "--out", out, "--calib", text_file,
                          "--ratio", "0.3", "--criterion", "wanda", "--gqa", "whole-groups", "--json")
    assert code == 0
    result = last_json(stdout)
    assert result["stock_loadable"] and result["params_after"] < result["params_before"]
    assert "parameters:" in stdout and str(out) in stdout
    report = json.loads((out / "liar_report.json").read_text())
    assert report["command"].startswith("liar prune") and report["config"]["gqa"] == "whole-groups"
    code, stdout, _ = run(capsys, "eval", "ppl", "--model", out, "--text", text_file, "--seqlen", "64", "--json")
    assert code == 0
    ppl = last_json(stdout)
    assert ppl["tokens"] > 0 and 1.0 < ppl["ppl"] < 1e6


def test_no_bias_flag(capsys, model_dir, text_file, tmp_path):
    code, _, _ = run(capsys, *PRUNE, "--model", model_dir, "--out", tmp_path / "o", "--calib", text_file, "--no-bias")
    assert code == 0
    config = json.loads((tmp_path / "o" / "config.json").read_text())
    assert config["attention_bias"] is False and config["mlp_bias"] is False


@pytest.fixture
def gpt2_dir(tmp_path):
    path = tmp_path / "gpt2"
    transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=128, n_embd=32, n_layer=1, n_head=2)).save_pretrained(path)
    char_tokenizer().save_pretrained(path)
    return path


@pytest.fixture
def nan_dir(tmp_path):
    path = tmp_path / "nan"
    model = tiny_model()
    with torch.no_grad():
        model.model.layers[0].self_attn.v_proj.weight[0, 0] = float("nan")
    model.save_pretrained(path)
    char_tokenizer().save_pretrained(path)
    return path


def bad_inputs(tmp_path, text_file):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    short = tmp_path / "short.txt"
    short.write_text("too short")
    return {
        "unknown architecture": ("gpt2", [], "unsupported architecture 'gpt2'"),
        "ratio above one": ("model", ["--ratio", "1.5", "--calib", text_file], "outside \\(0, 1\\)"),
        "ratio zero": ("model", ["--ratio", "0", "--calib", text_file], "outside \\(0, 1\\)"),
        "empty calibration": ("model", ["--calib", empty], "contains no text"),
        "short calibration": ("model", ["--calib", short], "pass more text or lower"),
        "missing calibration": ("model", ["--calib", tmp_path / "nope.txt"], "does not exist"),
        "nan activations": ("nan", ["--calib", text_file], "NaN/Inf"),
    }


@pytest.mark.parametrize("case", ["unknown architecture", "ratio above one", "ratio zero", "empty calibration",
                                  "short calibration", "missing calibration", "nan activations"])
def test_bad_input_is_a_clear_error_with_no_output(case, capsys, model_dir, gpt2_dir, nan_dir, text_file, tmp_path):
    which, extra, message = bad_inputs(tmp_path, text_file)[case]
    src = {"model": model_dir, "gpt2": gpt2_dir, "nan": nan_dir}[which]
    out = tmp_path / "pruned"
    code, _, err = run(capsys, *PRUNE, "--model", src, "--out", out, *extra)
    assert code == 2
    assert re.search(message, err), err
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".pruned")]


def test_existing_output_is_refused(capsys, model_dir, text_file, tmp_path):
    out = tmp_path / "pruned"
    out.mkdir()
    code, _, err = run(capsys, *PRUNE, "--model", model_dir, "--out", out, "--calib", text_file)
    assert code == 2 and "--overwrite" in err and list(out.iterdir()) == []


def test_not_a_model_folder(capsys, tmp_path):
    code, _, err = run(capsys, "eval", "ppl", "--model", tmp_path, "--json")
    assert code == 2 and "no config.json" in err
