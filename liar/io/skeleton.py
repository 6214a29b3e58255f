"""A model whose blocks stay on the meta device until the pipeline asks for one.

Only what runs before the first block (embeddings, rotary tables, masks) is materialized at the start;
the output head is never needed for calibration and stays on meta. Each block is read from the shards
when its turn comes and sent back to meta once written (liar.driver keeps at most one block read ahead
and one being written besides the one computing).

Blocks are read through their own ShardReader, never the stem's: a block may be read in a background
thread while the main thread frees another block or reads stem tensors.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from liar.io.blocks import block_prefix, load_block
from liar.io.load import model_class, read_config
from liar.io.shards import ShardReader
from liar.memory import pin_mmap_threshold, trim
from liar.models import architecture_for
from liar.models.base import Architecture


class Skeleton:
    def __init__(self, source: Path, dtype: torch.dtype, device: torch.device):
        self.source, self.dtype, self.device = source, dtype, device
        pin_mmap_threshold()
        self.config, _ = read_config(source)
        with torch.device("meta"):
            self.model = model_class(self.config)(self.config).to(dtype)
        self.model.eval()
        self.arch: Architecture = architecture_for(self.model)
        self.reader = ShardReader(source)
        self.block_reader = ShardReader(source)  # blocks only (see the module docstring)
        self.prefix = block_prefix(self.reader, self.arch)
        self.head_dim = self.arch.head_dim(self.config)
        self.layers = self.arch.layer_list(self.model)
        for i in range(len(self.layers)):  # meta blocks take the checkpoint's shapes (it may be pruned already)
            self.load_layer(i, device="meta")
        self._materialize_stem()

    def _stem_modules(self) -> list[tuple[str, nn.Module]]:
        """Modules outside the block list and the output head: what runs before the first block."""
        blocks = self.prefix.rstrip(".")
        head = self.model.get_output_embeddings()
        return [(name, m) for name, m in self.model.named_modules()
                if name and not name.startswith(blocks) and m is not head]

    def _materialize_stem(self) -> None:
        """Buffers first (rotary tables, position ids: rebuilt by the model's own initializer), then every
        parameter assigned straight from the checkpoint, so no weight is ever allocated twice."""
        for _, module in self._stem_modules():
            if any(b.is_meta for b in module.buffers(recurse=False)):
                module.to_empty(device=self.device, recurse=False)
                self.model._init_weights(module)
        for name, module in self._stem_modules():
            for pname, _ in list(module.named_parameters(recurse=False)):
                tensor = self.reader.get(f"{name}.{pname}").to(device=self.device, dtype=self.dtype)
                module._parameters[pname] = nn.Parameter(tensor, requires_grad=False)
        self.reader.close()

    def release_stem(self) -> None:
        """Send the stem back to meta once the first block's inputs are captured."""
        for _, module in self._stem_modules():
            module.to("meta")

    def stem_tensor_names(self) -> list[str]:
        """Checkpoint tensors outside the blocks (copied to the output unchanged)."""
        return [k for k in self.reader.keys() if not k.startswith(self.prefix)]

    def load_layer(self, index: int, reader: ShardReader | None = None, device: str | None = None,
                   hasher=None) -> nn.Module:
        """Materialize block `index` from the input shards (or from `reader`, e.g. the finished output's);
        `hasher` digests the bytes read. Loads of different blocks may run in two threads at once, each with
        its own reader (the input's block reader is used by one load at a time: see liar.driver)."""
        source = reader or self.block_reader
        layer = load_block(self.arch, self.layers[index], f"{self.prefix}{index}.", source, self.dtype,
                           device or self.device, self.head_dim, hasher)
        source.close()
        return layer

    def free_layer(self, index: int) -> None:
        """Send a block back to meta (its reader was closed when it was loaded) and trim the heap."""
        self.layers[index].to("meta")
        trim()
