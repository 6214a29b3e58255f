"""The one-call API: `liar.prune(model, out, PruneConfig(...)) -> PruneReport`.

Everything is validated before any work (destination, backend, calibration text), the destination is locked
for the whole run, and the one driver (liar.driver) runs with the source and sink that fit the call.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import uuid
from pathlib import Path

import torch
from torch import nn

from liar import distributed, driver, ops
from liar.blocks import CheckpointSink, InPlaceSink, ModuleSource, ShardSource
from liar.calibration import calibration_batches
from liar.config import PruneConfig
from liar.devices import DTYPES, resolve_device, resolve_dtype
from liar.io.destination import OutputLock, check_destination
from liar.io.load import load_pruned, load_tokenizer, resolve_source
from liar.io.writer import CheckpointWriter, InputChanged, digest_batches, fingerprint
from liar.report import PruneReport
from liar.io.skeleton import Skeleton

log = logging.getLogger(__name__)

RESULT_IRRELEVANT = ("overwrite", "offload", "max_memory", "overlap")  # settings that change no byte of the output


def prune(
    model: str | os.PathLike | nn.Module | None = None,
    out: str | os.PathLike | None = None,
    config: PruneConfig | None = None,
    *,
    tokenizer=None,
    calibration: list[str] | torch.Tensor | None = None,
    command: str | None = None,
) -> PruneReport:
    """Prune `model` (a folder, a .gguf file, a loaded transformers model, or None for the embedded
    SmolLM2-135M) and, when `out` is given, write the smaller checkpoint and its report there.

    A folder or file is streamed block by block into `out` (resumable); a loaded model is pruned in place (and
    written to `out` when given); a folder with `out=None` is loaded whole and pruned in memory.
    `calibration`: texts or token ids [nsamples, seqlen] overriding config.calib. Returns the PruneReport (also
    saved as liar_report.json beside the weights).
    """
    config = config or PruneConfig()
    command = command or f"liar.prune(config={config!r})"
    started = time.perf_counter()
    in_memory = isinstance(model, nn.Module)
    device = model_device(model, config)
    ops.resolve("gram_update", config.backend, device)  # an unavailable backend fails before any work
    named = [] if in_memory or model is None else [Path(model)]
    if out is not None:
        out = check_destination(out, named, config.overwrite)  # before any conversion
    source, tokenizer = _source(model, out, config, device, tokenizer, calibration, named)
    batches, calib_info = calibration_batches(source.arch, config, tokenizer, calibration)
    clock = driver.Clock(started, loaded=time.perf_counter())
    if out is None:
        return driver.run(source, InPlaceSink(), batches, calib_info, config, command, clock=clock)
    lock = OutputLock(out, command) if distributed.is_main() else contextlib.nullcontext()
    with lock:
        if distributed.is_main():
            check_destination(out, named + ([Path(source.name)] if source.resumable else []), config.overwrite)
        key = _run_key(source, batches, config)
        try:
            return _write(source, out, key, batches, calib_info, config, command, tokenizer, clock)
        except InputChanged:
            if not config.overwrite:
                raise
            log.warning("the input changed since the unfinished run began; --overwrite: starting over")
            return _write(source, out, key, batches, calib_info, config, command, tokenizer, clock)


def _write(source, out: Path, key: str, batches, calib_info, config: PruneConfig, command: str, tokenizer,
           clock: driver.Clock) -> PruneReport:
    writer = CheckpointWriter(out, key, config.overwrite, source.resumable, command)
    sink = _checkpoint_sink(source, writer, config)
    try:
        return driver.run(source, sink, batches, calib_info, config, command, tokenizer, out, clock)
    except BaseException as err:
        if writer.done == 0 or (config.overwrite and isinstance(err, InputChanged)):
            writer.abandon()  # nothing worth resuming, and no state left to strand the next run
        raise
    finally:
        sink.close()


def model_device(model, config: PruneConfig) -> torch.device:
    """The compute device (a loaded model's own unless --device says otherwise); joins torchrun's group."""
    if isinstance(model, nn.Module) and config.device == "auto":
        device = next(model.parameters()).device
    else:
        device = resolve_device(config.device)
    return distributed.init_from_env(device)


def _source(model, out, config: PruneConfig, device: torch.device, tokenizer, calibration, named: list[Path]):
    """(block source, tokenizer) for a loaded model, a folder/GGUF/None streamed to `out`, or loaded whole."""
    if isinstance(model, nn.Module):
        return ModuleSource(model.to(device).eval(), type(model).__name__), tokenizer
    folder = resolve_source(model)
    dtype = resolve_dtype(config.dtype, device)
    if out is None:
        source = ModuleSource(load_pruned(folder, dtype=dtype, device=device), str(folder))
    else:
        source = ShardSource(Skeleton(folder, dtype, device))
    if tokenizer is None and not isinstance(calibration, torch.Tensor):  # after the model: its errors come first
        tokenizer = load_tokenizer(folder)
    return source, tokenizer


def _run_key(source, batches, config: PruneConfig) -> str:
    """The same run (resumable) has the same key; a model passed in memory never resumes."""
    if not source.resumable:
        return uuid.uuid4().hex
    settings = {k: v for k, v in config.to_dict().items() if k not in RESULT_IRRELEVANT}
    config_bytes = (Path(source.name) / "config.json").read_bytes()
    return fingerprint(settings, digest_batches(batches), source.name, config_bytes)


def _checkpoint_sink(source, writer: CheckpointWriter, config: PruneConfig) -> CheckpointSink:
    if config.save_dtype != "auto":
        save_dtype = DTYPES[config.save_dtype]
    elif source.resumable:
        save_dtype = source.skeleton.reader.dtype()
    else:
        save_dtype = source.dtype
    stem = sum(1 for _ in _stem_names(source))
    blocks = len(source.layers)
    return CheckpointSink(writer, save_dtype, total_shards=blocks + stem, first_stem=blocks)


def _stem_names(source):
    if source.resumable:
        return source.skeleton.stem_tensor_names()
    return [name for name, _ in source.stem_tensors()]
