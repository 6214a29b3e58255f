"""Where calibration activations live between blocks: the compute device, CPU memory, or disk.

A TensorStore holds one tensor per calibration batch (a block's hidden states, or a cached consumer input)
and hands them back on the compute device, in order. Disk stores write one file per batch and read it back
memory-mapped; their files vanish when the store is cleared.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch

from liar.bytesize import parse_bytes

log = logging.getLogger(__name__)

PLACES = ("device", "cpu", "disk")


class TensorStore:
    def __init__(self, place: str, device: torch.device, folder: Path | None = None):
        if place not in PLACES:
            raise ValueError(f"place={place!r}; choose one of {PLACES}")
        self.place, self.device = place, device
        self._items: list[torch.Tensor | Path] = []
        if place == "disk" and folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
        self._folder = Path(tempfile.mkdtemp(prefix="acts-", dir=folder)) if place == "disk" else None

    def append(self, tensor: torch.Tensor) -> None:
        if self.place == "device":
            self._items.append(tensor.to(self.device))
        elif self.place == "cpu":
            self._items.append(tensor.to("cpu"))
        else:
            path = self._folder / f"{len(self._items):06d}.pt"
            torch.save(tensor.detach().cpu(), path)
            self._items.append(path)

    def __len__(self) -> int:
        return len(self._items)

    def _fetch(self, item: torch.Tensor | Path, mmap: bool) -> torch.Tensor:
        if isinstance(item, Path):
            return torch.load(item, mmap=mmap, weights_only=True).to(self.device)
        return item.to(self.device, non_blocking=True)

    def __iter__(self) -> Iterator[torch.Tensor]:
        for item in self._items:
            yield self._fetch(item, mmap=True)

    def drain(self) -> Iterator[torch.Tensor]:
        """Yield every tensor once, dropping each from the store as it is handed out (the store ends empty):
        a block's inputs are freed while its outputs are made, so only one of the two is ever whole."""
        while self._items:
            item = self._items.pop(0)
            tensor = self._fetch(item, mmap=False)  # read whole: the file goes right away
            if isinstance(item, Path):
                item.unlink()
            yield tensor

    def clear(self) -> None:
        self._items = []
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)


def choose_place(offload: str, need_bytes: int, budget_bytes: int | None, device: torch.device) -> str:
    """offload none → the compute device, cpu → CPU memory, disk → disk; any of them spills to disk when the
    activations would exceed the memory budget."""
    place = {"none": "device", "cpu": "cpu", "disk": "disk"}[offload]
    if place != "disk" and budget_bytes is not None and need_bytes > budget_bytes:
        log.info("calibration activations need %.2f GiB > budget %.2f GiB: keeping them on disk",
                 need_bytes / 2**30, budget_bytes / 2**30)
        return "disk"
    if place == "cpu" and device.type == "cpu":
        return "device"
    return place


def activation_bytes(tokens: int, hidden: int, ffn: int, dtype: torch.dtype, sequential: bool) -> int:
    """Peak bytes of calibration activations held at once: a block's inputs and outputs (dense), or teacher
    and student streams, the student's cached attention inputs (then outputs) and the cached FFN inputs, one
    FFN-wide store at a time (sequential, liar.sequential)."""
    per = tokens * dtype.itemsize
    return per * (4 * hidden + ffn) if sequential else per * 2 * hidden


def store_factory(offload: str, max_memory: str | None, need_bytes: int, device: torch.device,
                  folder: Path | None = None):
    budget = parse_bytes(max_memory) if max_memory else None
    place = choose_place(offload, need_bytes, budget, device)
    return lambda: TensorStore(place, device, folder)
