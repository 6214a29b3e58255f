"""Random-init LLaMA checkpoints written straight to sharded safetensors, one block at a time.

The writer never holds more than one block in memory, so checkpoints larger than RAM can be made:

    python bench/synthetic.py --out /tmp/llama-1024x32 --hidden 1024 --ffn 2816 --layers 32
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import transformers

from liar.io.shards import shard_name, write_index, write_shard

INIT_STD = 0.02  # LLaMA's initializer_range: keeps activations O(1) through random blocks


def llama_config(hidden: int, ffn: int, layers: int, heads: int, kv_heads: int, vocab: int):
    return transformers.LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=ffn,
                                    num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                                    max_position_embeddings=4096, tie_word_embeddings=False, dtype="float32",
                                    architectures=["LlamaForCausalLM"])


def _tensors(shapes: dict[str, torch.Size], gen: torch.Generator) -> dict[str, torch.Tensor]:
    return {name: torch.ones(shape) if "norm" in name else torch.randn(shape, generator=gen) * INIT_STD
            for name, shape in shapes.items()}


def write_checkpoint(out: Path, hidden: int = 1024, ffn: int = 2816, layers: int = 8, heads: int = 16,
                     kv_heads: int = 8, vocab: int = 32000, layers_per_shard: int = 4, seed: int = 0) -> Path:
    config = llama_config(hidden, ffn, layers, heads, kv_heads, vocab)
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in transformers.LlamaForCausalLM(config).state_dict().items()}
    out.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    groups = [[f"model.layers.{i}." for i in range(s, min(s + layers_per_shard, layers))]
              for s in range(0, layers, layers_per_shard)]
    stem = {k: v for k, v in shapes.items() if not k.startswith("model.layers.")}
    total_shards = len(groups) + 1
    weight_map, total = {}, 0
    for index, prefixes in enumerate(groups, start=1):
        names = {k: v for k, v in shapes.items() if k.startswith(tuple(prefixes))}
        total += write_shard(out / shard_name(index, total_shards), _tensors(names, gen))
        weight_map.update({k: shard_name(index, total_shards) for k in names})
    total += write_shard(out / shard_name(total_shards, total_shards), _tensors(stem, gen))
    weight_map.update({k: shard_name(total_shards, total_shards) for k in stem})
    write_index(out, weight_map, total)
    config.save_pretrained(out)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--ffn", type=int, default=2816)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--kv-heads", type=int, default=8)
    p.add_argument("--vocab", type=int, default=32000)
    args = p.parse_args()
    write_checkpoint(args.out, args.hidden, args.ffn, args.layers, args.heads, args.kv_heads, args.vocab)


if __name__ == "__main__":
    main()
