"""Nothing is ever lost: the hostile cases of issue 9, each of which destroyed data or stranded a run before.

Every case runs the real entry point (liar.prune or the CLI) on a tiny checkpoint and checks what is left on
disk afterwards: the input untouched, no hidden folders, the previous output intact or replaced whole.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import pytest
import torch

import liar
from liar.cli import main
from liar.io import destination
from liar.io.destination import OutputLock
from tests.conftest import calib_ids, char_tokenizer, tiny_model
from tests.test_pipeline import FAST

PRUNE = ["prune", "--nsamples", "4", "--seqlen", "32", "--batch-size", "2"]


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def cli(capsys, *argv) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


@pytest.fixture
def parent_with_model(tmp_path):
    """par/model: a checkpoint inside a folder the user might name as --out."""
    model = tmp_path / "par" / "model"
    tiny_model().save_pretrained(model)
    char_tokenizer().save_pretrained(model)
    return model


def test_an_output_that_holds_the_input_is_refused(capsys, parent_with_model, text_file):
    before = digest(parent_with_model.parent)
    code, err = cli(capsys, *PRUNE, "--model", parent_with_model, "--out", parent_with_model.parent, "--overwrite",
                    "--calib", text_file)
    assert code == 2 and re.search("the input .* is inside the output", err)
    assert digest(parent_with_model.parent) == before


@pytest.mark.parametrize("out", [".", ""])
def test_the_current_folder_is_never_an_output(out, capsys, model_dir, text_file, tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    (work / "notes.txt").write_text("precious")
    monkeypatch.chdir(work)
    code, err = cli(capsys, *PRUNE, "--model", model_dir, "--out", out, "--overwrite", "--calib", text_file)
    assert code == 2 and "current folder" in err
    assert [p.name for p in work.iterdir()] == ["notes.txt"]


def test_home_is_never_an_output(capsys, model_dir, text_file, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    code, err = cli(capsys, *PRUNE, "--model", model_dir, "--out", tmp_path, "--overwrite", "--calib", text_file)
    assert code == 2 and "home" in err


def test_a_foreign_folder_is_not_overwritten(capsys, model_dir, text_file, tmp_path):
    out = tmp_path / "photos"
    out.mkdir()
    (out / "cat.jpg").write_bytes(b"\xff\xd8")
    code, err = cli(capsys, *PRUNE, "--model", model_dir, "--out", out, "--overwrite", "--calib", text_file)
    assert code == 2 and "not a liar output" in err and (out / "cat.jpg").read_bytes() == b"\xff\xd8"


@pytest.mark.parametrize("kind", ["dangling symlink", "symlink", "file"])
def test_an_unusable_destination_fails_before_any_work(kind, capsys, model_dir, text_file, tmp_path):
    out = tmp_path / "out"
    if kind == "file":
        out.write_text("not a folder")
    else:
        target = tmp_path / ("nowhere" if kind == "dangling symlink" else "real")
        if kind == "symlink":
            target.mkdir()
        out.symlink_to(target)
    code, err = cli(capsys, *PRUNE, "--model", model_dir, "--out", out, "--overwrite", "--calib", text_file)
    assert code == 2 and ("symbolic link" in err or "is a file" in err), err
    assert hidden(tmp_path) == []  # no partial folder, no lock: nothing was started


@pytest.mark.parametrize("alpha", ["nan", "inf", "-1"])
def test_a_non_finite_damping_is_refused(alpha, capsys, model_dir, text_file, tmp_path):
    code, err = cli(capsys, *PRUNE, "--model", model_dir, "--out", tmp_path / "o", "--alpha", alpha,
                    "--calib", text_file)
    assert code == 2 and "finite number" in err and not (tmp_path / "o").exists()


def test_an_unavailable_backend_strands_nothing(capsys, model_dir, text_file, tmp_path):
    out = tmp_path / "o"
    code, err = cli(capsys, *PRUNE, "--model", model_dir, "--out", out, "--backend", "cuda", "--calib", text_file)
    assert code == 2 and "cuda" in err and hidden(tmp_path) == []
    code, _ = cli(capsys, *PRUNE, "--model", model_dir, "--out", out, "--calib", text_file)  # the corrected command
    assert code == 0 and (out / "config.json").is_file()


def test_a_second_run_on_a_locked_output_is_refused(model_dir, tmp_path):
    out = tmp_path / "o"
    with OutputLock(out, "liar prune --ratio 0.2 (the first run)"):
        with pytest.raises(FileExistsError, match=r"another liar run \(pid \d+.*the first run.*is writing"):
            liar.prune(model_dir, out, liar.PruneConfig(**FAST, ratio=0.4, overwrite=True), calibration=calib_ids())
    assert not out.exists() and hidden(tmp_path) == []


def test_a_stale_lock_of_a_killed_run_is_taken_over(model_dir, tmp_path, caplog):
    out = tmp_path / "o"
    (tmp_path / ".o.lock").write_text(json.dumps({"pid": 999999, "command": "liar prune (killed)"}))
    caplog.set_level("INFO", logger="liar.io.destination")
    liar.prune(model_dir, out, liar.PruneConfig(**FAST), calibration=calib_ids())
    assert "taking over the lock" in caplog.text and (out / "config.json").is_file() and hidden(tmp_path) == []


def test_changed_weights_with_the_same_size_and_mtime_refuse_to_resume(model_dir, tmp_path, monkeypatch):
    """Kill after block 0 (an error injected at block 1), change one weight in place keeping size and mtime:
    the resume must refuse instead of mixing old and new blocks."""
    out = tmp_path / "o"
    from liar.io.writer import CheckpointWriter

    real = CheckpointWriter.save_block

    def die_after_first(self, index, *args):
        if index == 1:
            raise KeyboardInterrupt("killed")
        return real(self, index, *args)

    monkeypatch.setattr(CheckpointWriter, "save_block", die_after_first)
    with pytest.raises(KeyboardInterrupt):
        liar.prune(model_dir, out, liar.PruneConfig(**FAST), calibration=calib_ids())
    monkeypatch.setattr(CheckpointWriter, "save_block", real)
    weights = model_dir / "model.safetensors"
    stat = weights.stat()
    from safetensors.torch import load_file, save_file

    tensors = load_file(weights)
    name = "model.layers.0.mlp.down_proj.weight"
    tensors[name] = tensors[name].flip(0).contiguous()  # same bytes in another order: same size
    save_file(tensors, weights, metadata={"format": "pt"})
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert weights.stat().st_size == stat.st_size
    with pytest.raises(ValueError, match="input checkpoint changed"):
        liar.prune(model_dir, out, liar.PruneConfig(**FAST), calibration=calib_ids())
    liar.prune(model_dir, out, liar.PruneConfig(**FAST, overwrite=True), calibration=calib_ids())
    assert (out / "config.json").is_file()


def test_a_full_disk_names_the_disk_and_the_run_resumes(model_dir, tmp_path, monkeypatch):
    from safetensors import SafetensorError

    import liar.io.writer as writer

    real = writer.write_shard
    calls = {"n": 0}

    def fill_up(path, tensors):
        calls["n"] += 1
        if calls["n"] == 2:
            raise SafetensorError("Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "
                                  "\"No space left on device\" })  (os error 28)")
        return real(path, tensors)

    monkeypatch.setattr(writer, "write_shard", fill_up)
    out = tmp_path / "o"
    with pytest.raises(OSError, match=r"the disk holding .* is full .*rerun the same command"):
        liar.prune(model_dir, out, liar.PruneConfig(**FAST), calibration=calib_ids())
    assert hidden(tmp_path) == [".o.partial"]  # the finished block is kept for the resume
    monkeypatch.setattr(writer, "write_shard", real)
    resumed = liar.prune(model_dir, out, liar.PruneConfig(**FAST), calibration=calib_ids())
    whole = liar.prune(model_dir, tmp_path / "w", liar.PruneConfig(**FAST), calibration=calib_ids())
    assert [l.mlp.kept for l in resumed.layers] == [l.mlp.kept for l in whole.layers]
    assert digest(out).keys() == digest(tmp_path / "w").keys()


def test_disk_offload_never_ships_activations(model_dir, tmp_path):
    out = tmp_path / "o"
    report = liar.prune(model_dir, out, liar.PruneConfig(**FAST, offload="disk", calibration="sequential"),
                        calibration=calib_ids())
    assert not [f for f in report.output["files"] if "acts" in f or f.endswith(".pt")]
    assert not list(out.rglob("*.pt")) and hidden(tmp_path) == []


@pytest.mark.parametrize("exchange", [True, False])
def test_overwrite_never_leaves_the_destination_missing(exchange, model_dir, tmp_path, monkeypatch):
    """A failure at the last step keeps the previous output whole (atomic exchange, or move-aside rolled back)."""
    out = tmp_path / "o"
    liar.prune(model_dir, out, liar.PruneConfig(**FAST), calibration=calib_ids())
    before = digest(out)
    if not exchange:
        monkeypatch.setattr(destination, "exchange", lambda a, b: False)
    real_rename = os.rename

    def failing_rename(src, dst):
        if Path(dst) == out and Path(src).name.endswith(".partial"):
            raise OSError("injected failure between the two renames")
        return real_rename(src, dst)

    monkeypatch.setattr(destination.os, "rename", failing_rename)
    if exchange:
        monkeypatch.setattr(destination, "exchange", lambda a, b: (_ for _ in ()).throw(OSError("injected")))
    with pytest.raises(OSError, match="injected"):
        liar.prune(model_dir, out, liar.PruneConfig(**FAST, ratio=0.4, overwrite=True), calibration=calib_ids())
    assert digest(out) == before
    monkeypatch.undo()
    liar.prune(model_dir, out, liar.PruneConfig(**FAST, ratio=0.4, overwrite=True), calibration=calib_ids())
    assert digest(out) != before and json.loads((out / "liar_report.json").read_text())["config"]["ratio"] == 0.4


def test_the_exchange_is_atomic_on_this_filesystem(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "x").write_text("a")
    (b / "x").write_text("b")
    if not destination.exchange(a, b):
        pytest.skip("this filesystem has no renameat2(RENAME_EXCHANGE); the move-aside path is tested above")
    assert (a / "x").read_text() == "b" and (b / "x").read_text() == "a"


def test_bf16_checkpoint_sequential_resume_feeds_the_student_as_saved(model_dir, tmp_path, monkeypatch):
    """The student stream of an uninterrupted run sees the pruned blocks exactly as saved (bf16), so a run
    resumed from the shards computes the same bytes."""
    source = tmp_path / "bf16"
    tiny_model(num_hidden_layers=3).to(torch.bfloat16).save_pretrained(source)
    char_tokenizer().save_pretrained(source)
    config = liar.PruneConfig(**FAST, calibration="sequential")
    liar.prune(source, tmp_path / "whole", config, calibration=calib_ids())
    from liar.io.writer import CheckpointWriter

    real = CheckpointWriter.save_block

    def die_at_two(self, index, *args):
        if index == 2:
            raise KeyboardInterrupt("killed")
        return real(self, index, *args)

    monkeypatch.setattr(CheckpointWriter, "save_block", die_at_two)
    with pytest.raises(KeyboardInterrupt):
        liar.prune(source, tmp_path / "resumed", config, calibration=calib_ids())
    monkeypatch.setattr(CheckpointWriter, "save_block", real)
    liar.prune(source, tmp_path / "resumed", config, calibration=calib_ids())
    whole, resumed = digest(tmp_path / "whole"), digest(tmp_path / "resumed")
    assert {k: v for k, v in whole.items() if k != "liar_report.json"} == \
        {k: v for k, v in resumed.items() if k != "liar_report.json"}
