"""safetensors checkpoints read tensor by tensor (memory-mapped) and written shard by shard, atomically."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

INDEX_NAME = "model.safetensors.index.json"
_SAFETENSORS_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64",
                       "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool"}
SINGLE_NAME = "model.safetensors"


def open_shard(path: Path):
    """safe_open with an error that names the file and the fix (a truncated or foreign file is common)."""
    try:
        return safe_open(path, "pt")
    except FileNotFoundError:
        raise FileNotFoundError(f"checkpoint file {path} does not exist; re-save or re-download it") from None
    except Exception as err:  # safetensors raises its own SafetensorError (not an OSError) for bad headers
        raise ValueError(f"{path} is not a readable safetensors file ({err}); it is truncated or corrupt: "
                         "re-save or re-download the checkpoint") from None


def _read_index(index: Path) -> dict[str, str]:
    try:
        return json.loads(index.read_text(encoding="utf-8"))["weight_map"]
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{index} is not a valid safetensors index ({type(err).__name__}: {err}); "
                         "re-save or re-download the checkpoint") from None


class ShardReader:
    """Name → tensor over a single-file or sharded checkpoint; each file is opened (mmap) once."""

    def __init__(self, folder: str | os.PathLike, files: list[Path] | None = None):
        """`files`: read exactly these shards (e.g. a run's finished ones) instead of the folder's index."""
        self.folder = Path(folder)
        index = self.folder / INDEX_NAME
        if files is not None:
            self.files = {name: path for path in files for name in shard_keys(path)}
        elif index.is_file():
            self.files = {name: self.folder / file for name, file in _read_index(index).items()}
        elif (self.folder / SINGLE_NAME).is_file():
            self.files = dict.fromkeys(shard_keys(self.folder / SINGLE_NAME), self.folder / SINGLE_NAME)
        else:
            raise FileNotFoundError(f"{self.folder} has neither {SINGLE_NAME} nor {INDEX_NAME}")
        self._handles: dict[Path, object] = {}
        for path in set(self.files.values()):  # headers only: a truncated or foreign shard fails here, up front
            open_shard(path)

    def __contains__(self, name: str) -> bool:
        return name in self.files

    def keys(self) -> list[str]:
        return list(self.files)

    def _handle(self, name: str):
        if name not in self.files:
            raise KeyError(f"{name} is not in the checkpoint {self.folder}")
        path = self.files[name]
        if path not in self._handles:
            self._handles[path] = open_shard(path)
        return self._handles[path]

    def get(self, name: str) -> torch.Tensor:
        return self._handle(name).get_tensor(name)

    def meta(self, name: str) -> torch.Tensor:
        """A meta tensor with the stored shape and dtype (reads no data)."""
        piece = self._handle(name).get_slice(name)
        dtype = getattr(torch, _SAFETENSORS_DTYPES[piece.get_dtype()])
        return torch.empty(piece.get_shape(), dtype=dtype, device="meta")

    def close(self) -> None:
        """Unmap the files: pages read so far stop counting as this process's memory."""
        self._handles.clear()

    def dtype(self) -> torch.dtype:
        """The dtype of the checkpoint's floating tensors (its first matrix), from the safetensors header:
        reading the tensor would load it whole (≈2 GB for a 70B model's embedding)."""
        name = next(n for n in self.files if n.endswith(".weight"))
        return self.meta(name).dtype


def shard_name(index: int, total: int) -> str:
    return f"model-{index:05d}-of-{total:05d}.safetensors"


def write_shard(path: Path, tensors: dict[str, torch.Tensor]) -> int:
    """Write tensors to `path` via a temporary file and a rename; returns the bytes of tensor data."""
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp, metadata={"format": "pt"})
    os.replace(tmp, path)
    return sum(t.numel() * t.element_size() for t in tensors.values())


def shard_keys(path: Path) -> list[str]:
    with open_shard(path) as f:
        return list(f.keys())  # noqa: SIM118


def write_index(folder: Path, weight_map: dict[str, str], total_size: int) -> None:
    index = {"metadata": {"total_size": total_size}, "weight_map": dict(sorted(weight_map.items()))}
    (folder / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")


def tensor_bytes(tensor: torch.Tensor):
    """The stored bytes of a tensor (any dtype, bf16 included) as a flat uint8 array, for hashing."""
    return tensor.contiguous().reshape(-1).view(torch.uint8).numpy()


def tensor_digest(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor_bytes(tensor)).hexdigest()
