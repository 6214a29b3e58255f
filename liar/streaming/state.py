"""The resumable state of a streaming run: a hidden folder beside the output holding one finished shard
per pruned block and a small state.json, both written atomically. The same command finds it and continues
after the last finished block; a run with other settings refuses it instead of mixing results.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path

import torch

from liar import distributed
from liar.allocation import Budget
from liar.io.shards import ShardReader, shard_name, write_shard
from liar.report import LayerReport, ModuleReport

STATE_NAME = "state.json"


def fingerprint(parts: dict, batches_digest: str, source: Path) -> str:
    """What makes two runs the same run: settings, calibration tokens and the input checkpoint."""
    files = sorted((p.name, p.stat().st_size, int(p.stat().st_mtime)) for p in source.iterdir() if p.is_file())
    blob = json.dumps({"settings": parts, "calibration": batches_digest, "source": str(source.resolve()),
                       "files": files}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def digest_batches(batches) -> str:
    h = hashlib.sha256()
    for b in batches:
        h.update(b.input_ids.cpu().numpy().tobytes())
        if b.attention_mask is not None:
            h.update(b.attention_mask.cpu().numpy().tobytes())
    return h.hexdigest()


def _report_from_dict(d: dict) -> LayerReport:
    return LayerReport(d["index"], ModuleReport(**d["attn"]), ModuleReport(**d["mlp"]), d["seconds"], d["stages"])


class PartialRun:
    """Under torch.distributed, rank 0 alone writes; the other ranks read its state (a shared filesystem)
    and keep their in-memory copy in step."""

    def __init__(self, out: Path, key: str, total_shards: int, overwrite: bool):
        """total_shards: one per block, then one per stem tensor (embeddings, final norm, head)."""
        self.folder = out.parent / f".{out.name}.partial"
        self.total_shards = total_shards
        self.main = distributed.is_main()
        with distributed.step():
            if self.main:
                self._prepare(key, overwrite)
        self.state = json.loads((self.folder / STATE_NAME).read_text(encoding="utf-8"))

    def _prepare(self, key: str, overwrite: bool) -> None:
        self.state: dict = {"fingerprint": key, "budgets": None, "reports": [], "params": []}
        if (self.folder / STATE_NAME).is_file():
            found = json.loads((self.folder / STATE_NAME).read_text(encoding="utf-8"))
            if found["fingerprint"] == key:
                self.state = found
            elif not overwrite:
                raise FileExistsError(
                    f"{self.folder} holds an unfinished run with other settings or inputs; rerun that exact "
                    "command to finish it, or pass --overwrite to discard it and start again")
            else:
                shutil.rmtree(self.folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._save()

    @property
    def done(self) -> int:
        return len(self.state["reports"])

    @property
    def budgets(self) -> list[Budget] | None:
        raw = self.state["budgets"]
        return None if raw is None else [Budget(*b) for b in raw]

    def set_budgets(self, budgets: list[Budget]) -> None:
        self.state["budgets"] = [[b.attn_units, b.neurons, b.experts] for b in budgets]
        self._save()

    def reports(self) -> list[LayerReport]:
        return [_report_from_dict(r) for r in self.state["reports"]]

    def shard(self, index: int) -> Path:
        return self.folder / shard_name(index + 1, self.total_shards)

    def save_block(self, index: int, tensors: dict[str, torch.Tensor], report: LayerReport) -> None:
        if index != self.done:
            raise RuntimeError(f"block {index} finished out of order (expected {self.done})")
        if self.main:
            write_shard(self.shard(index), tensors)
        self.state["reports"].append(asdict(report))
        self.state["params"].append(sum(t.numel() for t in tensors.values()))
        self._save()

    def finished_blocks(self) -> ShardReader:
        return ShardReader(self.folder, files=[self.shard(i) for i in range(self.done)])

    def _save(self) -> None:
        if not self.main:
            return
        tmp = self.folder / (STATE_NAME + ".tmp")
        tmp.write_text(json.dumps(self.state) + "\n", encoding="utf-8")
        os.replace(tmp, self.folder / STATE_NAME)

    def abandon(self) -> None:
        if self.main:
            shutil.rmtree(self.folder, ignore_errors=True)

    def discard_state(self) -> None:
        if self.main:
            (self.folder / STATE_NAME).unlink(missing_ok=True)
