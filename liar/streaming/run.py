"""Prune a checkpoint folder block by block, straight from its safetensors shards into a sharded output.

Memory holds the stem (only while the first block's inputs are captured), one block, its statistics and the
calibration activations (on the device, in CPU memory or on disk). Each pruned block is written to its own
shard before the next is read; the run can be killed at any point and resumed by the same command.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from liar import distributed, ops
from liar.activations import activation_bytes, store_factory
from liar.allocation import Budget, sizes_after
from liar.config import PruneConfig
from liar.io import experts
from liar.io.export import REPORT_NAME, ExportPlan, add_flagged_biases, apply_plan, export_note, plan_export
from liar.io.load import mark_per_layer_format
from liar.io.shards import INDEX_NAME, SINGLE_NAME, shard_keys, write_index, write_shard
from liar.pipeline import (
    BatchMeta, CalibBatch, NewStore, capture_inputs, global_budgets, prune_blocks, run_block, uniform_budgets,
)
from liar.report import LayerReport, PruneReport, versions
from liar.streaming.skeleton import Skeleton
from liar.streaming.state import PartialRun, digest_batches, fingerprint
from liar.structure import LayerShape

log = logging.getLogger(__name__)

WEIGHT_FILES = (SINGLE_NAME, INDEX_NAME, "config.json", REPORT_NAME)


class StreamBlocks:
    """Blocks read from the input shards on open; pruned ones written to the run's shard on close."""

    def __init__(self, skeleton: Skeleton, run: PartialRun, plan: ExportPlan | None, save_dtype: torch.dtype):
        self.skeleton, self.run, self.plan, self.save_dtype = skeleton, run, plan, save_dtype

    def __len__(self) -> int:
        return len(self.skeleton.layers)

    def open(self, index: int) -> nn.Module:
        return self.skeleton.load_layer(index)

    def close(self, index: int, layer: nn.Module, report: LayerReport | None) -> None:
        if report is not None:
            add_flagged_biases(self.skeleton.arch, layer, self.plan)
            prefix = f"{self.skeleton.prefix}{index}."
            state = layer.state_dict()
            if self.skeleton.arch.moe is not None:  # checkpoints store one linear per expert
                state = experts.to_saved(self.skeleton.arch.moe, state)
            tensors = {prefix + k: v.to(self.save_dtype) for k, v in state.items()}
            self.run.save_block(index, tensors, report)
        self.skeleton.free_layer(index)


def _advance(layer: nn.Module, metas: list[BatchMeta], hidden, new_store: NewStore):
    return run_block(layer, metas, hidden.drain(), {}, new_store())


def _replay(skeleton: Skeleton, run: PartialRun, metas, teacher, student, new_store: NewStore):
    """A resumed run rebuilds the next block's inputs: the dense blocks (and, in sequential mode, the
    finished pruned ones) run again over the captured inputs. Deterministic, so results do not change."""
    finished = run.finished_blocks() if student is not None else None
    for i in tqdm(range(run.done), desc="resuming", unit="layer", disable=not distributed.is_main()):
        teacher = _advance(skeleton.load_layer(i), metas, teacher, new_store)
        if student is not None:
            student = _advance(skeleton.load_layer(i, reader=finished), metas, student, new_store)
        skeleton.free_layer(i)
    return teacher, student


def _consumer_bias(skeleton: Skeleton, budgets: list[Budget], config: PruneConfig) -> dict[str, bool]:
    """Will any pruned consumer of each block carry a bias (see liar.functional.reconstruct)?"""
    arch, layers = skeleton.arch, skeleton.layers
    adds = config.reconstruct == "bias" or (config.reconstruct == "liar" and config.intercept)
    return {
        "attn": any(arch.consumer_has_bias(l, "attn") or (adds and b.attn_units > 0)
                    for l, b in zip(layers, budgets, strict=True)),
        "mlp": any(arch.consumer_has_bias(l, "mlp") or (adds and b.neurons > 0 and arch.moe is None)
                   for l, b in zip(layers, budgets, strict=True)),
    }


def _capture(skeleton: Skeleton, batches: list[CalibBatch], new_store: NewStore):
    hidden = new_store()
    metas = capture_inputs(skeleton.model, skeleton.layers[0], batches, skeleton.device, hidden)
    return metas, hidden


def _finish(skeleton: Skeleton, run: PartialRun, plan: ExportPlan, out: Path, report: PruneReport,
            overwrite: bool) -> None:
    """Write the stem shards, index, config, tokenizer files and report, then move the folder into place.

    Stem tensors (embeddings, head) are copied one per shard: the largest of them bounds the memory used."""
    for offset, name in enumerate(skeleton.stem_tensor_names()):
        write_shard(run.shard(len(skeleton.layers) + offset), {name: skeleton.reader.get(name)})
        skeleton.reader.close()
    weight_map, total = {}, 0
    for path in sorted(run.folder.glob("model-*-of-*.safetensors")):
        for name in shard_keys(path):
            weight_map[name] = path.name
        total += path.stat().st_size
    write_index(run.folder, weight_map, total)
    apply_plan(skeleton.arch, skeleton.config, plan, skeleton.head_dim)
    skeleton.config.save_pretrained(run.folder)
    if not plan.stock:
        mark_per_layer_format(run.folder / "config.json")
    for item in skeleton.source.iterdir():  # tokenizer, generation config, chat template ...
        if item.is_file() and item.name not in WEIGHT_FILES and not item.name.endswith(".safetensors"):
            shutil.copy2(item, run.folder / item.name)
    run.discard_state()
    report.output["files"] = sorted(p.name for p in run.folder.iterdir()) + [REPORT_NAME]
    report.save(run.folder / REPORT_NAME)
    if out.exists():
        if not overwrite:
            raise FileExistsError(f"{out} appeared while pruning; pass --overwrite to replace it")
        shutil.rmtree(out)
    run.folder.rename(out)


def _prune_all(skeleton: Skeleton, run: PartialRun, shapes: list[LayerShape], batches: list[CalibBatch],
               config: PruneConfig) -> ExportPlan:
    """Budgets (kept in the run state), then every unfinished block; returns the export plan."""
    arch = skeleton.arch
    tokens = sum(b.input_ids.numel() for b in batches)
    need = activation_bytes(tokens, skeleton.config.hidden_size, max(s.sizes.ffn for s in shapes), skeleton.dtype,
                            config.calibration == "sequential")
    new_store = store_factory(config.offload, config.max_memory, need, skeleton.device, run.folder)
    budgets = run.budgets
    if budgets is None:
        if config.allocation == "global":
            metas, hidden = _capture(skeleton, batches, new_store)
            budgets = global_budgets(arch, StreamBlocks(skeleton, run, None, skeleton.dtype), shapes, metas,
                                     hidden, config, new_store)
        else:
            budgets = uniform_budgets(arch, skeleton.config, shapes, config)
        run.set_budgets(budgets)
    sizes = [sizes_after(s, b, config.gqa) for s, b in zip(shapes, budgets, strict=True)]
    plan = plan_export(arch, skeleton.config, sizes, _consumer_bias(skeleton, budgets, config))
    metas, teacher = _capture(skeleton, batches, new_store)
    skeleton.release_stem()
    student = None
    if config.calibration == "sequential":
        student = new_store()
        for h in teacher:
            student.append(h)
    teacher, student = _replay(skeleton, run, metas, teacher, student, new_store)
    blocks = StreamBlocks(skeleton, run, plan, skeleton.reader.dtype())
    prune_blocks(arch, blocks, shapes, budgets, metas, teacher, student, config, new_store, start=run.done)
    return plan


@torch.no_grad()
def prune_streaming(skeleton: Skeleton, batches: list[CalibBatch], calibration: dict, out: Path,
                    config: PruneConfig, command: str) -> PruneReport:
    started = time.perf_counter()
    arch, layers = skeleton.arch, skeleton.layers
    shapes = [LayerShape.of(arch, layer, skeleton.head_dim) for layer in layers]
    key = fingerprint({k: v for k, v in config.to_dict().items() if k != "overwrite"},
                      digest_batches(batches), skeleton.source)
    run = PartialRun(out, key, len(layers) + len(skeleton.stem_tensor_names()), config.overwrite)
    try:
        plan = _prune_all(skeleton, run, shapes, batches, config)
    except (ValueError, FloatingPointError):
        run.abandon()  # bad input fails the same way on every retry: nothing worth resuming
        raise
    report = _report(skeleton, run, shapes, plan, calibration, config, command, out)
    report.timings = {"prune": time.perf_counter() - started}
    with distributed.step():
        if distributed.is_main():
            _finish(skeleton, run, plan, out, report, config.overwrite)
    report.timings["total"] = time.perf_counter() - started
    return report


def _report(skeleton: Skeleton, run: PartialRun, shapes: list[LayerShape], plan: ExportPlan, calibration: dict,
            config: PruneConfig, command: str, out: Path) -> PruneReport:
    reader = skeleton.reader
    params_before = sum(reader.meta(k).numel() for k in reader.keys())
    blocks_before = sum(s.block_params for s in shapes)
    blocks_after = sum(run.state["params"])
    stem = params_before - sum(reader.meta(k).numel() for k in reader.keys() if k.startswith(skeleton.prefix))
    report = PruneReport(
        config=config.to_dict(),
        model={"source": str(skeleton.source), "architecture": skeleton.arch.name,
               "params_before": params_before, "params_after": stem + blocks_after,
               "block_params_before": blocks_before, "block_params_after": blocks_after,
               "block_fraction_removed": 1 - blocks_after / blocks_before,
               "model_fraction_removed": 1 - (stem + blocks_after) / params_before},
        calibration=calibration, layers=run.reports(),
        backends={"device": str(skeleton.device), "gram_update": ops.last_backend("gram_update") or "",
                  "liar_solve": ops.last_backend("liar_solve") or "", "streaming": "layer-by-layer from shards",
                  "ranks": str(distributed.world_size())},
        command=command, versions=versions(),
        output={"path": str(out.resolve()), "stock_loadable": plan.stock, "report": str(out.resolve() / REPORT_NAME)},
    )
    report.add_solver_warnings()
    if not plan.stock:
        report.warnings.append(export_note(skeleton.arch))
    return report
