"""Where the driver's blocks come from and where finished ones go: the only difference between pruning a model
in memory and streaming a checkpoint folder.

Sources: `ModuleSource` (a loaded model, pruned in place) and `ShardSource` (a checkpoint folder, one block at a
time from its memory-mapped shards, every block's input bytes digested so a resume can prove they did not
change). Sinks: `InPlaceSink` (nothing written) and `CheckpointSink` (one shard per finished block through the
CheckpointWriter). Both sinks first bring a finished block to its saved form (flagged zero biases, the save
dtype), so what later blocks see is exactly what a resumed run rebuilds from the shards.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from pathlib import Path

import torch
from torch import nn

from liar.io import experts
from liar.io.export import ExportPlan, add_flagged_biases, apply_plan
from liar.io.load import LAYER_SIZES_KEY, mark_per_layer_format
from liar.io.shards import INDEX_NAME, SINGLE_NAME, ShardReader, tensor_digest
from liar.io.writer import CheckpointWriter
from liar.models import architecture_for
from liar.report import LayerReport
from liar.io.skeleton import Skeleton

SIDE_FILE_EXCLUDES = (SINGLE_NAME, INDEX_NAME, "config.json", "liar_report.json")


def _unique_params(model: nn.Module) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


class ModuleSource:
    """A loaded transformers model; its blocks are pruned in place."""

    resumable = False

    def __init__(self, model: nn.Module, name: str):
        self.model, self.name = model, name
        self.arch = architecture_for(model)
        self.config = model.config
        self.layers = self.arch.layer_list(model)
        self.prefix = next(n for n, m in model.named_modules() if m is self.layers) + "."
        first = next(model.parameters())
        self.device, self.dtype = first.device, first.dtype
        self.head_dim = self.arch.head_dim(self.config)
        self.params_before = _unique_params(model)

    def open(self, index: int) -> tuple[nn.Module, str | None]:
        return self.layers[index], None

    def close(self, index: int) -> None:
        return None

    def release_stem(self) -> None:
        return None

    def stem_tensors(self):
        """(name, tensor) of everything outside the blocks, tied copies once (as save_pretrained writes them)."""
        seen: set[int] = set()
        for name, tensor in self.model.state_dict(keep_vars=False).items():
            if name.startswith(self.prefix):
                continue
            key = tensor.untyped_storage().data_ptr() if tensor.numel() else id(tensor)
            if key in seen and getattr(self.config, "tie_word_embeddings", False):
                continue
            seen.add(key)
            yield name, tensor

    def write_side_files(self, folder: Path, tokenizer) -> None:
        self.config.architectures = [type(self.model).__name__]  # as save_pretrained records it
        self.config.save_pretrained(folder)
        generation = getattr(self.model, "generation_config", None)
        if generation is not None and self.model.can_generate():
            generation.save_pretrained(folder)
        if tokenizer is not None:
            tokenizer.save_pretrained(folder)


class ShardSource:
    """A checkpoint folder read block by block (see liar.io.skeleton)."""

    resumable = True

    def __init__(self, skeleton: Skeleton):
        self.skeleton = skeleton
        self.name = str(skeleton.source)
        self.arch, self.config, self.layers = skeleton.arch, skeleton.config, skeleton.layers
        self.prefix, self.head_dim = skeleton.prefix, skeleton.head_dim
        self.device, self.dtype = skeleton.device, skeleton.dtype
        reader = skeleton.reader
        self.params_before = sum(reader.meta(k).numel() for k in reader.keys())

    @property
    def model(self) -> nn.Module:
        return self.skeleton.model

    def open(self, index: int) -> tuple[nn.Module, str]:
        hasher = hashlib.sha256()
        layer = self.skeleton.load_layer(index, hasher=hasher)
        return layer, hasher.hexdigest()

    def close(self, index: int) -> None:
        self.skeleton.free_layer(index)

    def finished_tensors(self, index: int, files: list[Path]) -> dict[str, torch.Tensor]:
        """Block `index` as a finished run wrote it (`files`: its shards), by name within the block, on the
        compute device in the compute dtype (as load_block reads a block)."""
        reader = ShardReader(self.skeleton.source, files=files)
        prefix = f"{self.prefix}{index}."
        tensors = {}
        for name in reader.keys():
            if name.startswith(prefix):
                t = reader.get(name)
                tensors[name[len(prefix):]] = t.to(device=self.device, dtype=self.dtype if t.is_floating_point()
                                                   else t.dtype, copy=True)
        reader.close()
        return tensors

    def release_stem(self) -> None:
        self.skeleton.release_stem()

    def stem_tensors(self):
        reader = self.skeleton.reader
        for name in self.skeleton.stem_tensor_names():
            yield name, reader.get(name)
            reader.close()

    def write_side_files(self, folder: Path, tokenizer) -> None:
        self.config.save_pretrained(folder)
        for item in self.skeleton.source.iterdir():  # tokenizer, generation config, chat template ...
            if item.is_file() and item.name not in SIDE_FILE_EXCLUDES and not item.name.endswith(".safetensors"):
                shutil.copyfile(item, folder / item.name)


class InPlaceSink:
    """Nothing written: the pruned model stays in memory (its config is updated by the driver)."""

    def __init__(self):
        self.plan: ExportPlan | None = None
        self.done, self.budgets, self.scratch = 0, None, None

    def as_saved(self, arch, layer: nn.Module) -> None:
        add_flagged_biases(arch, layer, self.plan)

    def check_digest(self, name: str, digest: str | None) -> None:
        return None

    def set_budgets(self, budgets) -> None:
        return None

    def prepare(self, source, index: int, layer: nn.Module) -> None:
        self.as_saved(source.arch, layer)

    def commit(self, index: int, tensors: None, report: LayerReport, began: float | None) -> None:
        """`began`: the write stage's start (None: the caller timed it; see CheckpointWriter.save_block)."""
        if began is not None:
            report.stages["write"] = time.perf_counter() - began
            report.seconds = sum(report.stages.values())

    def reports(self) -> list[LayerReport]:
        return []

    def finish(self, source, report, tokenizer, stamp) -> None:
        apply_plan(source.arch, source.config, self.plan, source.head_dim)
        stamp(report)

    def close(self) -> None:
        return None


class CheckpointSink:
    """Finished blocks into the writer's partial folder, in the save dtype; the rest of the checkpoint at the end."""

    def __init__(self, writer: CheckpointWriter, save_dtype: torch.dtype, total_shards: int, first_stem: int):
        self.writer, self.save_dtype = writer, save_dtype
        self.total, self.first_stem = total_shards, first_stem
        self.plan: ExportPlan | None = None
        self.scratch = writer.scratch

    @property
    def done(self) -> int:
        return self.writer.done

    @property
    def budgets(self):
        return self.writer.budgets

    def set_budgets(self, budgets) -> None:
        self.writer.set_budgets(budgets)

    def check_digest(self, name: str, digest: str | None) -> None:
        if digest is not None:
            self.writer.check_digest(name, digest)

    def reports(self) -> list[LayerReport]:
        return self.writer.reports()

    def as_saved(self, arch, layer: nn.Module) -> None:
        """Flagged zero biases, and every floating tensor rounded through the save dtype in place."""
        add_flagged_biases(arch, layer, self.plan)
        with torch.no_grad():
            for tensor in [*layer.parameters(), *layer.buffers()]:
                if tensor.is_floating_point():
                    tensor.copy_(tensor.to(self.save_dtype))

    def prepare(self, source, index: int, layer: nn.Module) -> dict[str, torch.Tensor]:
        """The block's tensors as saved (they outlive the layer, which the source frees next)."""
        self.as_saved(source.arch, layer)
        prefix = f"{source.prefix}{index}."
        state = layer.state_dict()
        if source.arch.moe is not None:  # checkpoints store one linear per expert
            state = experts.to_saved(source.arch.moe, state)
        return {prefix + k: v.to(self.save_dtype) if v.is_floating_point() else v for k, v in state.items()}

    def commit(self, index: int, tensors: dict[str, torch.Tensor], report: LayerReport, began: float | None) -> None:
        self.writer.save_block(index, self.total, tensors, report, began)

    def finish(self, source, report, tokenizer, stamp) -> None:
        apply_plan(source.arch, source.config, self.plan, source.head_dim)
        source.config.dtype = self.save_dtype
        report.output["dtype"] = str(self.save_dtype).removeprefix("torch.")

        def side_files(folder: Path) -> None:
            source.write_side_files(folder, tokenizer)
            if hasattr(source.config, LAYER_SIZES_KEY) and not self.plan.stock:
                mark_per_layer_format(folder / "config.json")

        stem = ((name, t.to(self.save_dtype) if t.is_floating_point() else t) for name, t in self._checked(source))
        self.writer.finish(self.total, self.first_stem, stem, side_files, report, stamp)

    def _checked(self, source):
        for name, tensor in source.stem_tensors():
            if source.resumable:
                self.writer.check_digest(f"stem:{name}", tensor_digest(tensor))
            yield name, tensor

    def close(self) -> None:
        self.writer.close()


__all__ = ["CheckpointSink", "InPlaceSink", "ModuleSource", "ShardSource"]
