"""ShardReader.dtype() answers from the safetensors header, without reading any tensor's data."""

from __future__ import annotations

import pytest
import torch

from liar.io.shards import ShardReader, write_index, write_shard


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32], ids=str)
def test_dtype_comes_from_the_header_of_a_sharded_checkpoint(tmp_path, monkeypatch, dtype):
    gen = torch.Generator().manual_seed(0)
    first = {"model.embed_tokens.weight": torch.randn(37, 11, generator=gen).to(dtype)}
    second = {"model.norm.weight": torch.randn(11, generator=gen).to(dtype), "step": torch.tensor([3])}
    size = write_shard(tmp_path / "a.safetensors", first) + write_shard(tmp_path / "b.safetensors", second)
    write_index(tmp_path, {**dict.fromkeys(first, "a.safetensors"), **dict.fromkeys(second, "b.safetensors")}, size)
    reader = ShardReader(tmp_path)

    def no_data_reads(self, name):
        raise AssertionError(f"dtype() read the data of {name}")

    monkeypatch.setattr(ShardReader, "get", no_data_reads)
    assert reader.dtype() == dtype
