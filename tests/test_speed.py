"""`liar eval speed` on tiny checkpoints: the JSON's shape and positive measurements (no timing assertions:
speed targets live in bench/), a per-layer pruned checkpoint loaded through liar's loader, and bad input."""

from __future__ import annotations

import json

from liar.cli import main

SPEED = ["eval", "speed", "--device", "cpu", "--prompt-len", "12", "--gen-len", "3", "--repeats", "2", "--json"]


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_dense_and_pruned_side_by_side(capsys, model_dir, text_file, tmp_path):
    pruned = tmp_path / "pruned"
    code, _, err = run(capsys, "prune", "--model", model_dir, "--out", pruned, "--calib", text_file, "--nsamples", "4",
                       "--seqlen", "32", "--ratio", "0.5", "--allocation", "global")
    assert code == 0, err
    assert json.loads((pruned / "config.json").read_text())["model_type"] == "liar_pruned"  # per-layer widths
    code, out, err = run(capsys, *SPEED, "--model", model_dir, "--model", pruned, "--batch", "2")
    assert code == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert (result["batch"], result["prompt_len"], result["gen_len"], result["device"]) == (2, 12, 3, "cpu")
    dense, small = result["models"]
    assert (dense["model"], small["model"]) == (str(model_dir), str(pruned))
    for row in (dense, small):
        for key in ("prefill_ms", "prefill_tokens_per_s", "decode_tokens_per_s", "decode_ms_per_step",
                    "prefill_speedup", "decode_speedup"):
            assert row[key] > 0, (key, row)
        assert 0 <= row["peak_memory_mb"] < 1024, row  # a high-water mark above its own reset: never negative
    assert dense["prefill_speedup"] == dense["decode_speedup"] == dense["flop_ratio"] == 1.0
    assert small["params"] < dense["params"] and small["flop_ratio"] > 1.0
    assert small["flops_per_token"] == 2 * small["linear_params"]


def test_bad_lengths_are_refused_by_name(capsys, model_dir):
    code, _, err = run(capsys, *SPEED, "--model", model_dir, "--gen-len", "0")
    assert code == 2 and "--gen-len must be at least 1" in err
