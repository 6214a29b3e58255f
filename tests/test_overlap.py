"""Overlapped streaming (liar.driver._Blocks): the next block is read and the finished one written in background
threads while a block computes, with at most one block in flight each way, the same bytes as a run without
overlap, and a background failure surfacing in the main thread as itself, leaving a resumable run.

No timing thresholds: the instrumented stages wait on events (with a timeout that only bounds a failing run)."""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict

import pytest

import liar
import liar.io.writer as writer
from liar import pipeline
from liar.blocks import CheckpointSink, ShardSource
from tests.conftest import calib_ids, char_tokenizer, tiny_model
from tests.test_pipeline import FAST
from tests.test_safety import digest, hidden

LAYERS = 4
WAIT = 60  # seconds: only a broken overlap ever waits this long


@pytest.fixture
def deep_dir(tmp_path):
    path = tmp_path / "tiny-llama-4"
    tiny_model(num_hidden_layers=LAYERS).save_pretrained(path)
    char_tokenizer().save_pretrained(path)
    return path


def _wrap(monkeypatch, owner, name: str, before=None, after=None):
    """Replace owner.name by a call of the original between before(*args) and after(*args)."""
    real = getattr(owner, name)

    def wrapped(*args, **kwargs):
        if before is not None:
            before(*args)
        try:
            return real(*args, **kwargs)
        finally:
            if after is not None:
                after(*args)

    monkeypatch.setattr(owner, name, wrapped)


@pytest.mark.parametrize("overlap", [True, False])
def test_the_next_block_is_read_and_the_last_one_written_while_a_block_computes(overlap, deep_dir, tmp_path,
                                                                                  monkeypatch):
    """Block i+1's read starts before block i's step ends; block i−1's write ends only after block i's step began
    (each read / write is held until the step it must overlap has begun: without overlap it never is)."""
    began, ended = defaultdict(threading.Event), defaultdict(threading.Event)
    overlapped: dict[str, list[bool]] = {"read": [], "write": []}
    gate = (lambda event: event.wait(WAIT)) if overlap else (lambda event: event.is_set())

    def reading(_source, index):
        if index >= 1:
            overlapped["read"].append(not ended[index - 1].is_set() and gate(began[index - 1]))

    def written(_sink, index, *_):
        if index + 1 < LAYERS:
            overlapped["write"].append(gate(began[index + 1]))

    def step_began(*args):
        began[args[7]].set()

    def step_ended(*args):
        ended[args[7]].set()

    _wrap(monkeypatch, ShardSource, "open", before=reading)
    _wrap(monkeypatch, CheckpointSink, "commit", after=written)
    _wrap(monkeypatch, pipeline, "dense_step", before=step_began, after=step_ended)
    report = liar.prune(deep_dir, tmp_path / "o", liar.PruneConfig(**FAST, overlap=overlap), calibration=calib_ids())
    assert overlapped == {"read": [overlap] * (LAYERS - 1), "write": [overlap] * (LAYERS - 1)}
    # the first block is read, and the last one written, in the foreground: nothing else runs then
    expected = [{"write"}] + [{"read", "write"}] * (LAYERS - 2) + [{"read"}] if overlap else [set()] * LAYERS
    assert [set(layer.overlapped) for layer in report.layers] == expected


@pytest.mark.parametrize("calibration", ["dense", "sequential"])
def test_overlap_writes_the_same_checkpoint(calibration, deep_dir, tmp_path):
    config = liar.PruneConfig(**FAST, calibration=calibration)
    liar.prune(deep_dir, tmp_path / "on", config, calibration=calib_ids())
    liar.prune(deep_dir, tmp_path / "off", config.replace(overlap=False), calibration=calib_ids())
    on, off = digest(tmp_path / "on"), digest(tmp_path / "off")
    del on["liar_report.json"], off["liar_report.json"]
    assert on == off


@pytest.mark.parametrize("calibration", ["dense", "sequential"])
def test_at_most_one_block_in_flight_each_way(calibration, deep_dir, tmp_path, monkeypatch):
    """Slowed reads and writes: at most three blocks are held at once (read ahead, computing, being written),
    one read and one write at a time; without overlap, one block."""
    lock = threading.Lock()
    held: set[int] = set()
    busy = {"open": 0, "commit": 0}
    peak = {"held": 0, "open": 0, "commit": 0}

    def enter(kind: str, index: int | None = None):
        with lock:
            if index is not None:
                held.add(index)
            busy[kind] += 1
            peak.update(held=max(peak["held"], len(held)), **{kind: max(peak[kind], busy[kind])})
        time.sleep(0.05)  # slow: lets the other thread catch up, if it were allowed to

    def leave(kind: str, index: int | None = None):
        with lock:
            busy[kind] -= 1
            if index is not None:
                held.discard(index)

    _wrap(monkeypatch, ShardSource, "open", before=lambda _s, i: enter("open", i), after=lambda _s, i: leave("open"))
    _wrap(monkeypatch, CheckpointSink, "commit", before=lambda _s, i, *_: enter("commit"),
          after=lambda _s, i, *_: leave("commit", i))
    config = liar.PruneConfig(**FAST, calibration=calibration)
    liar.prune(deep_dir, tmp_path / "on", config, calibration=calib_ids())
    assert peak["held"] <= 3 and peak["open"] == peak["commit"] == 1 and not held
    peak.update(held=0, open=0, commit=0)
    liar.prune(deep_dir, tmp_path / "off", config.replace(overlap=False), calibration=calib_ids())
    assert peak == {"held": 1, "open": 1, "commit": 1} and not held


class Injected(Exception):
    """A failure no liar code raises."""


def _full_disk():
    from safetensors import SafetensorError

    return SafetensorError("Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: \"No space "
                           "left on device\" })  (os error 28)")


@pytest.mark.parametrize("full_disk", [False, True])
def test_a_failed_background_write_surfaces_as_itself_and_the_run_resumes(full_disk, deep_dir, tmp_path,
                                                                          monkeypatch):
    """Block 1's shard fails in the write thread (while block 2 computes): the run stops by block 2's close at
    the latest with that error (a full disk: liar's DiskFull naming the disk and the fix), block 0 stays
    finished, and the same command resumes to the checkpoint an uninterrupted run writes."""
    failure = _full_disk() if full_disk else Injected("the shard of block 1 could not be written")
    failed_in: list[str] = []
    real = writer.write_shard

    def write_shard(path, tensors):
        if path.name.startswith("model-00002-of-"):  # block 1
            failed_in.append(threading.current_thread().name)
            raise failure
        return real(path, tensors)

    steps: list[int] = []
    _wrap(monkeypatch, pipeline, "dense_step", before=lambda *args: steps.append(args[7]))
    monkeypatch.setattr(writer, "write_shard", write_shard)
    out = tmp_path / "o"
    with pytest.raises(writer.DiskFull if full_disk else Injected) as caught:
        liar.prune(deep_dir, out, liar.PruneConfig(**FAST), calibration=calib_ids())
    if full_disk:
        assert "is full" in str(caught.value) and "rerun the same command" in str(caught.value)
        assert caught.value.__cause__ is failure
    else:
        assert caught.value is failure
    assert failed_in and failed_in[0] != threading.main_thread().name
    assert steps[-1] <= 2  # surfaced by the next block's close at the latest
    state = json.loads((tmp_path / ".o.partial" / "state.json").read_text())
    assert len(state["reports"]) == 1 and hidden(tmp_path) == [".o.partial"]
    monkeypatch.undo()
    liar.prune(deep_dir, out, liar.PruneConfig(**FAST), calibration=calib_ids())
    liar.prune(deep_dir, tmp_path / "whole", liar.PruneConfig(**FAST), calibration=calib_ids())
    resumed, whole = digest(out), digest(tmp_path / "whole")
    del resumed["liar_report.json"], whole["liar_report.json"]
    assert resumed == whole


def test_a_failed_read_ahead_surfaces_when_its_block_is_opened(deep_dir, tmp_path, monkeypatch):
    """A block read ahead that cannot be read stops the run as itself when the pipeline reaches it; the blocks
    before it are kept for a resume."""
    failure = Injected("block 2 could not be read")

    def reading(_source, index):
        if index == 2:
            raise failure

    steps: list[int] = []
    _wrap(monkeypatch, pipeline, "dense_step", before=lambda *args: steps.append(args[7]))
    _wrap(monkeypatch, ShardSource, "open", before=reading)
    with pytest.raises(Injected) as caught:
        liar.prune(deep_dir, tmp_path / "o", liar.PruneConfig(**FAST), calibration=calib_ids())
    assert caught.value is failure and steps == [0, 1]
    state = json.loads((tmp_path / ".o.partial" / "state.json").read_text())
    assert len(state["reports"]) == 2
