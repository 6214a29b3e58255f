"""Layer streaming from shards: equal to the in-memory path, sharded output, offload, and resume after a kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import transformers

import liar
from liar.io.shards import INDEX_NAME, ShardReader
from tests.conftest import calib_ids, char_tokenizer, tiny_model
from tests.test_pipeline import FAST, logits


def save(model, folder: Path, shard: str | None = None) -> Path:
    model.save_pretrained(folder, max_shard_size=shard) if shard else model.save_pretrained(folder)
    char_tokenizer().save_pretrained(folder)
    return folder


def tensors(folder: Path) -> dict[str, torch.Tensor]:
    reader = ShardReader(folder)
    return {k: reader.get(k) for k in reader.keys()}


def streamed_equals_in_memory(model, config: liar.PruneConfig, tmp_path: Path):
    """Prune a sharded checkpoint of `model` folder → folder and the same checkpoint loaded in memory; assert both
    outputs hold bit-identical tensors. Returns (the streamed run's report, the in-memory pruned model)."""
    source = save(model, tmp_path / "src", shard="40KB")
    assert (source / INDEX_NAME).is_file()  # a sharded input
    streamed = liar.prune(source, tmp_path / "streamed", config, calibration=calib_ids())
    in_memory = liar.load_pruned(source)
    liar.prune(in_memory, tmp_path / "memory", config, tokenizer=char_tokenizer(), calibration=calib_ids())
    a, b = tensors(tmp_path / "streamed"), tensors(tmp_path / "memory")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    torch.testing.assert_close(logits(liar.load_pruned(tmp_path / "streamed")), logits(in_memory), rtol=0, atol=0)
    return streamed, in_memory


@pytest.mark.parametrize("calibration", ["dense", "sequential"])
@pytest.mark.parametrize("allocation,selection", [("uniform", "criterion"), ("global", "criterion"),
                                                  ("error", "reconstruction")])
def test_streaming_equals_in_memory(calibration, allocation, selection, tmp_path):
    config = liar.PruneConfig(**FAST, ratio=0.35, calibration=calibration, allocation=allocation,
                              selection=selection)
    streamed, in_memory = streamed_equals_in_memory(tiny_model(num_hidden_layers=3, intermediate_size=160), config,
                                                    tmp_path)
    assert [l.mlp.kept for l in streamed.layers] == [l.mlp.kept for l in liar.PruneReport.load(
        tmp_path / "memory" / "liar_report.json").layers]
    shards = sorted((tmp_path / "streamed").glob("model-*.safetensors"))  # a shard per block and stem tensor
    assert len(shards) == 3 + 3 and json.loads((tmp_path / "streamed" / INDEX_NAME).read_text())["weight_map"]
    if allocation == "uniform":
        stock = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "streamed")
        torch.testing.assert_close(logits(stock), logits(in_memory), rtol=0, atol=0)


@pytest.mark.parametrize("offload,max_memory", [("disk", None), ("cpu", None), ("none", "1KiB")])
def test_offload_places_give_the_same_checkpoint(offload, max_memory, tmp_path, caplog):
    source = save(tiny_model(), tmp_path / "src")
    ids = calib_ids()
    liar.prune(source, tmp_path / "ref", liar.PruneConfig(**FAST), calibration=ids)
    caplog.set_level("INFO", logger="liar.activations")
    config = liar.PruneConfig(**FAST, offload=offload, max_memory=max_memory, calibration="sequential")
    liar.prune(source, tmp_path / "seq-ref", liar.PruneConfig(**FAST, calibration="sequential"), calibration=ids)
    liar.prune(source, tmp_path / "off", config, calibration=ids)
    a, b = tensors(tmp_path / "off"), tensors(tmp_path / "seq-ref")
    assert all(torch.equal(a[k], b[k]) for k in a)
    if max_memory:
        assert "keeping them on disk" in caplog.text
    assert not list(tmp_path.glob(".off*"))  # no activation files or partial folders left


def test_a_foreign_unfinished_run_is_refused(tmp_path):
    """Refused while it holds finished blocks (they are someone's work); replaced when it holds none."""
    source = save(tiny_model(), tmp_path / "src")
    partial = tmp_path / ".out.partial"
    partial.mkdir()
    state = {"fingerprint": "other", "budgets": None, "reports": [{"index": 0}], "digests": {},
             "command": "liar prune --ratio 0.5"}
    (partial / "state.json").write_text(json.dumps(state))
    with pytest.raises(FileExistsError, match="other settings .*liar prune --ratio 0.5"):
        liar.prune(source, tmp_path / "out", liar.PruneConfig(**FAST), calibration=calib_ids())
    liar.prune(source, tmp_path / "out", liar.PruneConfig(**FAST, overwrite=True), calibration=calib_ids())
    assert (tmp_path / "out" / "config.json").is_file() and not partial.exists()
    empty = tmp_path / ".out2.partial"
    empty.mkdir()
    (empty / "state.json").write_text(json.dumps({**state, "reports": []}))
    liar.prune(source, tmp_path / "out2", liar.PruneConfig(**FAST), calibration=calib_ids())
    assert (tmp_path / "out2" / "config.json").is_file() and not empty.exists()


def _cli(source: Path, out: Path, text: Path, calibration: str) -> list[str]:
    return [sys.executable, "-m", "liar", "prune", "--model", str(source), "--out", str(out), "--calib", str(text),
            "--nsamples", "24", "--seqlen", "96", "--batch-size", "8", "--calibration", calibration]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("calibration", ["dense", "sequential"])
def test_killed_run_resumes_to_a_byte_identical_checkpoint(calibration, dtype, tmp_path, text_file):
    """SIGKILL once two blocks are on disk (found by polling the partial folder), then the same command."""
    big = dict(hidden_size=192, intermediate_size=768, num_hidden_layers=8, num_attention_heads=6,
               num_key_value_heads=2, head_dim=32)
    source = save(tiny_model(**big).to(dtype), tmp_path / "src")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    _cli_run = lambda out: _cli(source, out, text_file, calibration)  # noqa: E731
    subprocess.run(_cli_run(tmp_path / "whole"), check=True, env=env, capture_output=True)
    out, partial = tmp_path / "resumed", tmp_path / ".resumed.partial"
    proc = subprocess.Popen(_cli_run(out), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while len(list(partial.glob("model-*.safetensors"))) < 2 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = len(list(partial.glob("model-*.safetensors")))
    assert 2 <= finished < 9 and not out.exists(), "the run was not caught mid-way"
    done = subprocess.run(_cli_run(out), env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resuming" in done.stderr
    for name in sorted(p.name for p in (tmp_path / "whole").iterdir() if p.name != "liar_report.json"):
        assert (out / name).read_bytes() == (tmp_path / "whole" / name).read_bytes(), name
    assert not partial.exists()
