"""The one checkpoint writer: a hidden folder beside the output that fills block by block, resumes, and is
swapped into place at the end.

`.<out>.partial/` holds one shard per finished block and `state.json` (settings fingerprint, budgets, the
per-block reports and the digests of the input bytes each block was read from), each written atomically. The
same command finds it and continues after the last finished block; a run with other settings or a changed
input refuses it instead of mixing results. At the end the stem shards, index, config, side files and report
are added, the state is dropped and the folder replaces the output (liar.io.destination). Under
torch.distributed rank 0 alone writes; the other ranks read its state and keep their copy in step.

A block may be saved by a background thread (liar.driver) while the main thread records the digests of the
next block's input bytes: the state is changed and saved under one lock. Blocks are saved one at a time, in
order, and each counts as done only once both its shard and the state naming it are on disk.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from liar import distributed
from liar.io.destination import MARKER, hidden_sibling, swap_into_place
from liar.io.shards import shard_keys, shard_name, write_index, write_shard
from liar.report import LayerReport, PruneReport

log = logging.getLogger(__name__)

STATE_NAME = "state.json"
FILE_MODE, FOLDER_MODE = 0o644, 0o755


class InputChanged(ValueError):
    """The input's bytes differ from those an unfinished run was started on."""


class DiskFull(OSError):
    """Raised with a message that names the disk and the fix."""


def fingerprint(settings: dict, calibration_digest: str, source: str, config_bytes: bytes) -> str:
    """What makes two runs the same run: settings, calibration tokens, the input's path and config bytes.
    The weights are checked block by block as they are read (`check_digest`), not here."""
    blob = json.dumps({"settings": settings, "calibration": calibration_digest, "source": source,
                       "config": hashlib.sha256(config_bytes).hexdigest()}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def digest_batches(batches) -> str:
    h = hashlib.sha256()
    for b in batches:
        h.update(b.input_ids.cpu().numpy().tobytes())
        if b.attention_mask is not None:
            h.update(b.attention_mask.cpu().numpy().tobytes())
    return h.hexdigest()


def _disk_full(folder: Path, err: BaseException) -> DiskFull:
    free = shutil.disk_usage(folder).free / 2**20 if folder.exists() else 0.0
    return DiskFull(errno.ENOSPC, f"the disk holding {folder} is full ({free:.0f} MiB free) ({err}); free space "
                                  "there (or choose an --out on another disk) and rerun the same command: it resumes "
                                  "after the last finished block")


def _is_disk_full(err: BaseException) -> bool:
    text = str(err)
    return getattr(err, "errno", None) == errno.ENOSPC or "os error 28" in text or "No space left" in text


class CheckpointWriter:
    def __init__(self, out: Path, key: str, overwrite: bool, resumable: bool, command: str):
        """`resumable`: False for a model passed in memory, whose unfinished runs can never be continued."""
        self.out, self.key, self.resumable = out, key, resumable
        self.folder = hidden_sibling(out, "partial")
        self.scratch = hidden_sibling(out, "activations")  # disk-offloaded activations: never inside the output
        self.main = distributed.is_main()
        self._lock = threading.Lock()  # the state: changed by the main thread and by a background save_block
        with distributed.step():
            if self.main:
                self._prepare(overwrite, command)
        self.state = json.loads((self.folder / STATE_NAME).read_text(encoding="utf-8"))

    # ---- the partial folder ----------------------------------------------------------------------
    def _prepare(self, overwrite: bool, command: str) -> None:
        fresh = {"fingerprint": self.key, "resumable": self.resumable, "command": command, "budgets": None,
                 "reports": [], "digests": {}}
        found = self._found_state()
        if found is not None and found["fingerprint"] == self.key and self.resumable:
            self.state = found
            log.info("resuming an unfinished run after block %d of %s", len(found["reports"]) - 1, self.folder)
        else:
            if found is not None and found.get("resumable", True) and found["reports"] and not overwrite:
                raise FileExistsError(
                    f"{self.folder} holds an unfinished run with other settings or inputs ({len(found['reports'])} "
                    f"blocks done by: {found.get('command', 'an earlier liar version')}); rerun that command to "
                    "finish it, or pass --overwrite to discard it and start again")
            if self.folder.exists():
                log.info("discarding the unfinished run in %s", self.folder)
                shutil.rmtree(self.folder)
            self.state = fresh
        self.folder.mkdir(mode=FOLDER_MODE, parents=True, exist_ok=True)
        os.chmod(self.folder, FOLDER_MODE)
        self._clear_scratch()
        self._save()

    def _found_state(self) -> dict | None:
        """The state of a partial folder liar left here, None if there is none; refuses a foreign folder."""
        if not self.folder.exists():
            return None
        state = self.folder / STATE_NAME
        if state.is_file():
            return json.loads(state.read_text(encoding="utf-8"))
        if (self.folder / MARKER).is_file():  # finished, stopped before the final rename: redo it
            return {"fingerprint": None, "resumable": False, "reports": []}
        raise FileExistsError(f"{self.folder} exists but was not left by liar (no {STATE_NAME}); remove it or choose "
                              "another --out")

    def _clear_scratch(self) -> None:
        if self.scratch.exists():
            shutil.rmtree(self.scratch)

    def _save(self) -> None:
        if not self.main:
            return
        tmp = self.folder / (STATE_NAME + ".tmp")
        with self._lock:  # whole: two saves never interleave, so the newest state is the one left on disk
            try:
                tmp.write_text(json.dumps(self.state) + "\n", encoding="utf-8")
            except OSError as err:
                raise (_disk_full(self.folder, err) if _is_disk_full(err) else err) from err
            os.replace(tmp, self.folder / STATE_NAME)

    # ---- progress ----------------------------------------------------------------------------------
    @property
    def done(self) -> int:
        return len(self.state["reports"])

    @property
    def budgets(self) -> list[list[int]] | None:
        return self.state["budgets"]

    def set_budgets(self, budgets: list[list[int]]) -> None:
        with self._lock:
            self.state["budgets"] = budgets
        self._save()

    def reports(self) -> list[LayerReport]:
        return [LayerReport.from_dict(r) for r in self.state["reports"]]

    def check_digest(self, name: str, digest: str) -> None:
        """Record the digest of input bytes read under `name`, or refuse if an earlier read saw other bytes."""
        with self._lock:
            seen = self.state["digests"].get(name)
            if seen is not None and seen != digest:
                raise InputChanged(f"the input checkpoint changed since this unfinished run began ({name} holds "
                                   "other bytes now); rerun with --overwrite to start over on the new weights")
            self.state["digests"][name] = digest

    def shard(self, index: int, total: int) -> Path:
        return self.folder / shard_name(index + 1, total)

    def _write(self, path: Path, tensors: dict[str, torch.Tensor]) -> None:
        if not self.main:
            return
        try:
            write_shard(path, tensors)
        except Exception as err:  # safetensors reports a full disk as SafetensorError("... os error 28")
            if _is_disk_full(err):
                path.with_name(path.name + ".tmp").unlink(missing_ok=True)
                raise _disk_full(self.folder, err) from err
            raise
        os.chmod(path, FILE_MODE)

    def save_block(self, index: int, total: int, tensors: dict[str, torch.Tensor], report: LayerReport,
                   began: float | None) -> None:
        """Write a finished block's shard, then its report into the state.

        `began`: a save in the caller's thread, whose write stage runs from `began` to the end of this call (the
        state's copy cannot count saving the state itself). None: a background save; the caller timed its own
        write stage, and the seconds spent writing the shard go to `report.overlapped['write']`."""
        if index != self.done:
            raise RuntimeError(f"block {index} finished out of order (expected {self.done})")
        started = time.perf_counter()
        self._write(self.shard(index, total), tensors)
        if began is not None:
            _set_write(report, began)
        else:
            report.overlapped["write"] = time.perf_counter() - started
        with self._lock:
            self.state["reports"].append(report.to_dict())
        self._save()
        if began is not None:
            _set_write(report, began)

    def finished_files(self, total: int) -> list[Path]:
        return [self.shard(i, total) for i in range(self.done)]

    # ---- the end -----------------------------------------------------------------------------------
    def finish(self, total: int, first_stem: int, stem: Iterable[tuple[str, torch.Tensor]],
               write_side_files: Callable[[Path], None], report: PruneReport,
               stamp: Callable[[PruneReport], None]) -> None:
        """Stem shards (one tensor each: the largest bounds the memory), index, config and side files (by the
        caller), report (`stamp` fills its timings just before it is saved); then the folder replaces the
        output."""
        if self.main:
            for offset, (name, tensor) in enumerate(stem):
                self._write(self.shard(first_stem + offset, total), {name: tensor})
            weight_map, size = {}, 0
            for path in sorted(self.folder.glob("model-*-of-*.safetensors")):
                weight_map.update({name: path.name for name in shard_keys(path)})
                size += path.stat().st_size
            try:
                write_index(self.folder, weight_map, size)
                report.output["bytes"] = size
                write_side_files(self.folder)
                report.output["files"] = sorted([p.name for p in self.folder.iterdir() if p.name != STATE_NAME]
                                                + [MARKER])
                stamp(report)
                report.save(self.folder / MARKER)
            except OSError as err:
                raise (_disk_full(self.folder, err) if _is_disk_full(err) else err) from err
            for path in self.folder.iterdir():
                if path.is_file():
                    os.chmod(path, FILE_MODE)
            (self.folder / STATE_NAME).unlink()
            swap_into_place(self.folder, self.out)

    def close(self) -> None:
        """Remove the activation scratch folder (liar's own); the partial folder stays for a resume."""
        if self.main:
            self._clear_scratch()

    def abandon(self) -> None:
        """Drop the partial folder of a run that finished no block (nothing there is worth resuming)."""
        if self.main:
            shutil.rmtree(self.folder, ignore_errors=True)
            self._clear_scratch()


def _set_write(report: LayerReport, began: float) -> None:
    report.stages["write"] = time.perf_counter() - began
    report.seconds = sum(report.stages.values())
