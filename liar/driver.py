"""The one driver: block source → budgets and export plan → calibrate (dense | sequential) → select →
reconstruct → block sink → one report.

Pruning a model in memory and streaming a checkpoint folder differ only in the source and the sink
(liar.blocks). The export plan is made from the budgets before any block is pruned, so every sink writes
blocks in their final form; a resumed run replays the finished blocks from the partial folder exactly as saved.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from liar import distributed, ops, plan_checks
from liar.activations import activation_bytes, store_factory
from liar.allocation import Budget, sizes_after
from liar.config import PruneConfig
from liar.io.export import block_linear_params, export_note, plan_export
from liar.io.shards import tensor_digest
from liar.forward import CalibBatch, NewStore, capture_inputs, run_block
from liar.pipeline import error_budgets, global_budgets, prune_blocks, uniform_budgets
from liar.plan import consumer_bias
from liar.report import LayerReport, PruneReport, versions
from liar.sequential import replay_step
from liar.structure import LayerShape

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Clock:
    """perf_counter() readings: when the user's call started, and when loading and calibration text were done."""

    started: float
    loaded: float


class _Blocks:
    """The pipeline's view of one source and one sink: open reads (and digests), close writes and frees.

    Overlapped (config.overlap, the default): while block i computes, one background thread reads block i+1
    (file read, digest, materialised on the compute device) and another writes block i−1 (its shard, then
    the state naming it). One slot each way: a read starts only when the previous one was taken, a write only
    when the previous one ended, so memory holds at most three blocks (one read ahead, one computing, one
    being written), and blocks are saved one at a time, in order, each done only once its shard and state are
    on disk. Digests are checked, and every stage timed, in the main thread: 'read' is the time it waited for
    a block, 'write' the time from the end of a block's step to the hand-off (freeing, the saved form,
    waiting for the previous write); what the background threads spent goes to `LayerReport.overlapped`.
    An exception in a background thread surfaces in the main thread as the original error at the next open
    or close (so inside the block's `distributed.step`); the last block is written in the foreground.
    On a GPU the background read's copy to the device goes to the same (default) stream as the compute, so
    only the disk read and digest run alongside it.
    """

    def __init__(self, source, sink, overlap: bool):
        self.source, self.sink = source, sink
        self._reads = ThreadPoolExecutor(1, "liar-read") if overlap else None
        self._writes = ThreadPoolExecutor(1, "liar-write") if overlap else None
        for pool in (self._reads, self._writes):
            if pool is not None:
                pool.submit(int)  # a pool starts its thread with its first task: now, outside every stage
        self._ahead: tuple[int, Future] | None = None  # the block being read ahead
        self._written: Future | None = None  # the block being written
        self._read_seconds: dict[int, float] = {}  # seconds a background thread spent reading a block

    def __len__(self) -> int:
        return len(self.source.layers)

    def _read(self, index: int) -> tuple[nn.Module, str | None, float]:
        began = time.perf_counter()
        layer, digest = self.source.open(index)
        return layer, digest, time.perf_counter() - began

    def _take(self, index: int) -> tuple[nn.Module, str | None]:
        """Block `index`: the one read ahead if it is that one, else read now."""
        if self._ahead is not None:
            ahead, future = self._ahead
            self._ahead = None
            if ahead == index:
                layer, digest, seconds = future.result()
                self._read_seconds[index] = seconds
                return layer, digest
            self._drop(ahead, future)
        layer, digest, _ = self._read(index)
        return layer, digest

    def open(self, index: int, read_ahead: bool = True) -> nn.Module:
        """Block `index`, its digest checked; with overlap (and `read_ahead`) block index+1 starts reading."""
        self._raise_failed_write()
        layer, digest = self._take(index)
        self.sink.check_digest(f"block:{index}", digest)
        if self._reads is not None and read_ahead and index + 1 < len(self):
            self._ahead = (index + 1, self._reads.submit(self._read, index + 1))
        return layer

    def as_saved(self, layer: nn.Module) -> None:
        self.sink.as_saved(self.source.arch, layer)

    def close(self, index: int, layer: nn.Module, report: LayerReport | None, began: float) -> None:
        """Write a pruned block (its 'write' stage since `began`: freeing, saved form, the shard) and free it."""
        if report is None:
            self.source.close(index)
            return
        tensors = self.sink.prepare(self.source, index, layer)  # the saved form: flagged biases included
        report.params = block_linear_params(self.source.arch, layer)
        self.source.close(index)
        if index in self._read_seconds:
            report.overlapped["read"] = self._read_seconds.pop(index)
        self._wait_for_write()
        if self._writes is None or index + 1 == len(self):  # the last block: nothing left to overlap with
            self.sink.commit(index, tensors, report, began)
            return
        report.stages["write"] = time.perf_counter() - began
        report.seconds = sum(report.stages.values())
        self._written = self._writes.submit(self.sink.commit, index, tensors, report, None)

    def _wait_for_write(self) -> None:
        written, self._written = self._written, None
        if written is not None:
            written.result()  # the original error of a failed write

    def _raise_failed_write(self) -> None:
        if self._written is not None and self._written.done():
            self._wait_for_write()

    def _drop(self, index: int, future: Future) -> None:
        """Wait for a block read ahead that will not be used, and free it."""
        try:
            future.result()
        except Exception as err:  # never asked for: its error is not this run's
            log.debug("block %d, read ahead and not used, failed: %s", index, err)
        self.source.close(index)

    def __enter__(self) -> _Blocks:
        return self

    def __exit__(self, kind, err, trace) -> None:
        """Let the background work end before the caller goes on (a failed run's partial folder may be removed
        next): the write in flight finishes, a block read ahead is freed, and the threads stop."""
        try:
            if self._ahead is not None:
                ahead, self._ahead = self._ahead, None
                self._drop(*ahead)
            if err is None:
                self._wait_for_write()
            elif self._written is not None:
                try:
                    self._wait_for_write()
                except BaseException as failed:  # the run's own error is the one to raise
                    log.error("the background write of a finished block failed too: %r", failed)
        finally:
            for pool in (self._reads, self._writes):
                if pool is not None:
                    pool.shutdown(wait=True)


SCORED = {"global": global_budgets, "error": error_budgets}  # allocations that need a scoring pass


def _budgets(source, blocks: _Blocks, shapes, batches, config: PruneConfig, new_store: NewStore) -> list[Budget]:
    if blocks.sink.budgets is not None:
        return [Budget(*b[:3], predicted=None if len(b) < 4 or b[3] is None else tuple(b[3]))
                for b in blocks.sink.budgets]
    if config.allocation in SCORED:
        hidden = new_store()
        metas = capture_inputs(source.model, source.layers[0], batches, source.device, hidden)
        budgets = SCORED[config.allocation](source.arch, blocks, shapes, metas, hidden, config, new_store)
    else:
        budgets = uniform_budgets(source.arch, source.config, shapes, config)
    blocks.sink.set_budgets([[b.attn_units, b.neurons, b.experts, b.predicted] for b in budgets])
    return budgets


def _replay(source, blocks: _Blocks, metas, teacher, student, new_store: NewStore):
    """A resumed run rebuilds the next block's inputs: the dense blocks run again over the captured inputs and,
    in sequential mode, the student through the finished blocks' own passes with their saved weights
    (liar.sequential.replay_step), so both streams are byte for byte those of an uninterrupted run."""
    done = blocks.sink.done
    if not done:
        return teacher, student
    files = blocks.sink.writer.finished_files(blocks.sink.total)
    reports = blocks.sink.reports()
    for i in tqdm(range(done), desc="replaying finished blocks", unit="layer", disable=not distributed.is_main()):
        layer = blocks.open(i)
        if student is None:
            teacher = run_block(layer, metas, teacher.drain(), {}, new_store())
        else:
            teacher, student = replay_step(source.arch, layer, source.finished_tensors(i, files), reports[i],
                                           source.head_dim, metas, teacher, student, new_store, blocks.as_saved)
        source.close(i)
    return teacher, student


def _verify_finished(source, blocks: _Blocks) -> None:
    """On a resume, read the finished blocks' input bytes again first: a changed input stops the run here, before
    any work (and before the stem is released, so the caller may start over)."""
    for i in range(blocks.sink.done):
        blocks.open(i, read_ahead=False)
        source.close(i)


def _record_stem(source, sink) -> None:
    """Digest the tensors outside the blocks once, so a resume proves they are unchanged."""
    if source.resumable:
        for name, tensor in source.stem_tensors():
            sink.check_digest(f"stem:{name}", tensor_digest(tensor))


def build_report(source, shapes: list[LayerShape], layers: list[LayerReport], plan, calibration: dict,
                 config: PruneConfig, command: str, out) -> PruneReport:
    """The run report, the same for every source and sink."""
    blocks_before = sum(s.block_params for s in shapes)
    blocks_after = sum(layer.params for layer in layers)
    params_after = source.params_before - blocks_before + blocks_after
    statistics_op = "gram_update_cross" if config.calibration == "sequential" else "gram_update"
    report = PruneReport(
        config=config.to_dict(),
        model={"source": source.name, "architecture": source.arch.name,
               "params_before": source.params_before, "params_after": params_after,
               "block_params_before": blocks_before, "block_params_after": blocks_after,
               "block_fraction_removed": 1 - blocks_after / blocks_before,
               "model_fraction_removed": 1 - params_after / source.params_before},
        calibration=calibration, layers=layers,
        backends={"device": str(source.device), "gram_update": ops.last_backend(statistics_op) or "",
                  "liar_solve": ops.last_backend("liar_solve") or "", "ranks": str(distributed.world_size()),
                  "blocks": "streamed from shards" if source.resumable else "in memory",
                  "self_checks": "; ".join(f"{k}: {v}" for k, v in ops.self_checks().items())},
        command=command, versions=versions(),
        output={"path": str(out) if out else None, "stock_loadable": plan.stock,
                "report": str(out / "liar_report.json") if out else None},
    )
    report.add_solver_warnings()
    for warning in plan_checks.run_warnings(config, source.config, report.model["block_fraction_removed"], layers):
        log.warning(warning)
        report.warnings.append(warning)
    if not plan.stock:
        report.warnings.append(export_note(source.arch))
    return report


@torch.no_grad()
def run(source, sink, batches: list[CalibBatch], calibration: dict, config: PruneConfig, command: str,
        tokenizer=None, out=None, clock: Clock | None = None) -> PruneReport:
    """Prune every block of `source` into `sink`; returns the report (also saved by a checkpoint sink).
    `clock`: when the call that led here started and finished loading (the report's phases start there)."""
    clock = clock or Clock(time.perf_counter(), time.perf_counter())
    arch = source.arch
    shapes = [LayerShape.of(arch, layer, source.head_dim) for layer in source.layers]
    tokens = sum(b.input_ids.numel() for b in batches)
    need = activation_bytes(tokens, source.config.hidden_size, max(s.sizes.ffn for s in shapes), source.dtype,
                            config.calibration == "sequential")
    new_store = store_factory(config.offload, config.max_memory, need, source.device, sink.scratch)
    with _Blocks(source, sink, config.overlap) as blocks:
        _verify_finished(source, blocks)
        _record_stem(source, sink)
        budgets = _budgets(source, blocks, shapes, batches, config, new_store)
        sizes = [sizes_after(s, b, config.gqa) for s, b in zip(shapes, budgets, strict=True)]
        sink.plan = plan_export(arch, source.config, sizes, consumer_bias(arch, source.layers, budgets, config))
        teacher = new_store()
        metas = capture_inputs(source.model, source.layers[0], batches, source.device, teacher)
        source.release_stem()
        student = None
        if config.calibration == "sequential":
            student = new_store()
            for h in teacher:
                student.append(h)
        teacher, student = _replay(source, blocks, metas, teacher, student, new_store)
        finished = sink.reports()
        setup_done = time.perf_counter()
        layers = finished + prune_blocks(arch, blocks, shapes, budgets, metas, teacher, student, config, new_store,
                                         start=sink.done)
        blocks_done = time.perf_counter()
    report = build_report(source, shapes, layers, sink.plan, calibration, config, command, out)

    def stamp(report: PruneReport) -> None:
        """Called by the sink right before the report is saved: every phase since the call started, so their sum
        is the run's wall time up to this moment."""
        report.timings = {"load": clock.loaded - clock.started, "setup": setup_done - clock.loaded,
                          "blocks": blocks_done - setup_done, "finish": time.perf_counter() - blocks_done}
        report.timings["total"] = sum(report.timings.values())

    with distributed.step():
        if distributed.is_main():
            sink.finish(source, report, tokenizer, stamp)
    if not distributed.is_main():
        stamp(report)
    return report
