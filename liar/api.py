"""The one-call API: `liar.prune(model, out, PruneConfig(...)) -> PruneReport`."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import torch
from torch import nn

from liar import distributed, ops
from liar.activations import activation_bytes, store_factory
from liar.config import PruneConfig
from liar.devices import resolve_device, resolve_dtype
from liar.io.export import (
    REPORT_NAME, block_params, check_destination, count_params, export_note, finalize_config, save_pruned,
)
from liar.io.load import load_pruned, load_tokenizer, resolve_source
from liar.models import architecture_for
from liar.calibration import calibration_batches
from liar.pipeline import prune_model
from liar.report import PruneReport, versions
from liar.streaming.run import prune_streaming
from liar.streaming.skeleton import Skeleton

log = logging.getLogger(__name__)


def _load(model, config: PruneConfig, device: torch.device, tokenizer):
    """(model, tokenizer, source folder or None) for a path / None (embedded default) / loaded model."""
    if isinstance(model, nn.Module):
        return model.to(device), tokenizer, None
    source = resolve_source(model)
    loaded = load_pruned(source, dtype=resolve_dtype(config.dtype, device), device=device)
    return loaded, tokenizer or load_tokenizer(source), source


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

    A loaded model is pruned in place. `calibration`: texts or token ids [nsamples, seqlen] overriding
    config.calib. Returns the PruneReport (also saved as liar_report.json beside the weights).
    """
    config = config or PruneConfig()
    command = command or f"liar.prune(config={config!r})"
    if isinstance(model, nn.Module) or out is None:
        return _prune_in_memory(model, out, config, tokenizer, calibration, command)
    return _prune_streaming(model, Path(out), config, tokenizer, calibration, command)


def _prune_streaming(model, out: Path, config: PruneConfig, tokenizer, calibration, command: str) -> PruneReport:
    """A checkpoint folder into an output folder: block by block from the shards, resumable."""
    device = distributed.init_from_env(resolve_device(config.device))
    if model is not None:
        check_destination(out, Path(model), config.overwrite)  # fail fast, before any conversion
    source = resolve_source(model)
    check_destination(out, source, config.overwrite)
    skeleton = Skeleton(source, resolve_dtype(config.dtype, device), device)
    if tokenizer is None and not isinstance(calibration, torch.Tensor):
        tokenizer = load_tokenizer(source)
    batches, calib_info = calibration_batches(skeleton.arch, config, tokenizer, calibration)
    return prune_streaming(skeleton, batches, calib_info, out, config, command)


def _prune_in_memory(model, out, config: PruneConfig, tokenizer, calibration, command: str) -> PruneReport:
    """A loaded model (or a folder loaded whole) pruned in place; saved with save_pretrained when `out`."""
    started = time.perf_counter()
    device = resolve_device(config.device) if not isinstance(model, nn.Module) or config.device != "auto" \
        else next(model.parameters()).device
    device = distributed.init_from_env(device)
    model, tokenizer, source = _load(model, config, device, tokenizer)
    if out is not None:
        check_destination(Path(out), source, config.overwrite)
    arch = architecture_for(model)
    model.eval()
    batches, calib_info = calibration_batches(arch, config, tokenizer, calibration)
    loaded = time.perf_counter()
    params_before, blocks_before = count_params(model), block_params(arch, model)
    tokens = sum(b.input_ids.numel() for b in batches)
    need = activation_bytes(tokens, model.config.hidden_size, arch.ffn_width(arch.layer_list(model)[0]),
                            next(model.parameters()).dtype, config.calibration == "sequential")
    new_store = store_factory(config.offload, config.max_memory, need, device)
    layers = prune_model(model, arch, batches, config, device, new_store)
    pruned = time.perf_counter()
    stock = finalize_config(arch, model)
    params_after, blocks_after = count_params(model), block_params(arch, model)
    report = PruneReport(
        config=config.to_dict(),
        model={
            "source": str(source) if source else type(model).__name__, "architecture": arch.name,
            "params_before": params_before, "params_after": params_after,
            "block_params_before": blocks_before, "block_params_after": blocks_after,
            "block_fraction_removed": 1 - blocks_after / blocks_before,
            "model_fraction_removed": 1 - params_after / params_before,
        },
        calibration=calib_info,
        layers=layers,
        backends={"device": str(device), "gram_update": ops.last_backend("gram_update") or "",
                  "liar_solve": ops.last_backend("liar_solve") or "", "ranks": str(distributed.world_size())},
        timings={"load": loaded - started, "prune": pruned - loaded},
        command=command,
        versions=versions(),
        output={"path": str(Path(out).resolve()) if out else None, "stock_loadable": stock,
                "report": str(Path(out).resolve() / REPORT_NAME) if out else None},
    )
    report.add_solver_warnings()
    if not stock:
        report.warnings.append(export_note(arch))
    if out is not None:
        report.timings["total"] = time.perf_counter() - started
        with distributed.step():
            if distributed.is_main():
                save_pruned(model, tokenizer, Path(out), report, config.overwrite)
    report.timings["total"] = time.perf_counter() - started
    return report
