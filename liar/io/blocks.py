"""Materialize one block (decoder or encoder layer) from checkpoint tensors, with the shapes as saved."""

from __future__ import annotations

import torch
from torch import nn

from liar.io import experts
from liar.io.shards import ShardReader, tensor_bytes
from liar.models.base import Architecture, set_linear

FIX = "the checkpoint does not match its config.json: re-save or re-download it (or fix config.json)"


def load_block(
    arch: Architecture, layer: nn.Module, prefix: str, reader: ShardReader, dtype: torch.dtype | None,
    device: torch.device | str, head_dim: int, hasher=None,
) -> nn.Module:
    """Set every parameter of `layer` from `reader` under `prefix` (device "meta": shapes only, no reads).

    Block linears are rebuilt at the checkpoint's shapes (a pruned checkpoint may be narrower than its
    base config) and get a bias exactly when the checkpoint has one; other parameters are assigned. The
    shapes are checked for consistency first (see check_block_tensors), so a wrong tensor is named here
    rather than surfacing as a size mismatch deep in a solve.
    `hasher` (a hashlib object), when given, digests every tensor's name and stored bytes as read.
    """

    on_meta = torch.device(device).type == "meta"

    def fetch(name: str) -> torch.Tensor:
        t = reader.meta(prefix + name) if on_meta else reader.get(prefix + name)
        if hasher is not None:
            hasher.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
            hasher.update(tensor_bytes(t))
        # A private copy, never a view of the memory-mapped file: once the reader closes, the file pages
        # leave this process, and each weight is released as soon as pruning replaces it.
        return t.to(device=device, dtype=dtype if dtype is not None and t.is_floating_point() else t.dtype,
                    copy=not on_meta)

    def fetch_param(name: str) -> torch.Tensor:
        if arch.moe is None or not experts.is_fused(arch.moe, name):
            return fetch(name)
        # Checkpoints store one linear per expert (see liar.io.experts): fused here, per tensor as stored.
        return experts.read_fused(arch.moe, name, fetch, lambda key: f"{prefix}{key}" in reader)

    linears = {sub for kind in ("attn", "mlp") for sub in arch.linears(layer, kind)}
    others = {}  # checkpoint name -> the shape the model expects (experts: stored per linear, checked on read)
    for mod_name, module in layer.named_modules():
        if mod_name not in linears:
            for pname, param in module.named_parameters(recurse=False):
                name = f"{mod_name}.{pname}" if mod_name else pname
                if arch.moe is None or not experts.is_fused(arch.moe, name):
                    others[name] = tuple(param.shape)
    plain = {sub for sub in linears if arch.moe is None or sub != arch.moe.experts}
    check_block_tensors(arch, layer, prefix, reader, head_dim, plain, others)
    for sub in sorted(linears):  # a fixed order: the digest of the bytes read depends on it
        bias = fetch(f"{sub}.bias") if f"{prefix}{sub}.bias" in reader else None
        set_linear(layer, sub, fetch(f"{sub}.weight"), bias)
    for mod_name, module in layer.named_modules():
        if mod_name in linears:
            continue
        for pname, param in list(module.named_parameters(recurse=False)):
            name = f"{mod_name}.{pname}" if mod_name else pname
            module._parameters[pname] = nn.Parameter(fetch_param(name), requires_grad=param.requires_grad)
    if torch.device(device).type != "meta" and any(b.is_meta for b in layer.buffers()):
        raise NotImplementedError(f"{type(layer).__name__} keeps buffers liar cannot rebuild from a checkpoint")
    arch.refresh_layer(layer, head_dim)
    return layer


def _present(reader: ShardReader, prefix: str, name: str) -> torch.Tensor:
    """The stored meta tensor of prefix+name, or an error naming it (and the blocks the checkpoint has)."""
    full = prefix + name
    if full not in reader:
        block_list, _, index = prefix.rstrip(".").rpartition(".")
        indices = {k[len(block_list) + 1 :].split(".", 1)[0] for k in reader.keys() if k.startswith(block_list + ".")}
        count = len({i for i in indices if i.isdigit()})
        where = (f"block {index} is incomplete" if int(index) < count else f"it holds {count} blocks under "
                 f"{block_list + '.'!r} but config.json (num_hidden_layers) declares more")
        raise ValueError(f"{reader.folder} has no tensor {full}; {where}: {FIX}")
    t = reader.meta(full)
    if not t.is_floating_point():
        raise ValueError(f"tensor {full} in {reader.folder} is {str(t.dtype).removeprefix('torch.')}; liar prunes "
                         "floating-point checkpoints: dequantize first (load it and save it in float32/bfloat16)")
    return t


def check_block_tensors(arch: Architecture, layer: nn.Module, prefix: str, reader: ShardReader, head_dim: int,
                        linears: set[str], others: dict[str, tuple[int, ...]]) -> None:
    """Every tensor of a block is present, floating point and consistent with its neighbours.

    Widths may be narrower than the base config (a pruned checkpoint is legitimate), so the check is
    consistency: q rows a multiple of head_dim and equal to o's in-features, k and v rows equal and whole
    KV heads dividing the query heads, every FFN producer's rows equal to the consumer's in-features, the
    producers reading and the consumers writing `hidden_size`, and every other parameter (norms) exactly
    the model's shape. Reads headers only (no tensor data).
    """
    hidden = arch.attn_producers(layer)["q"].in_features  # the model's (not yet replaced by the checkpoint)
    w = {sub: tuple(_present(reader, prefix, f"{sub}.weight").shape) for sub in linears}
    for sub in linears:
        if f"{prefix}{sub}.bias" in reader:
            _expect(prefix, f"{sub}.bias", tuple(_present(reader, prefix, f"{sub}.bias").shape), (w[sub][0],),
                    f"one bias per row of {sub}.weight")
    for name, shape in others.items():
        _expect(prefix, name, tuple(_present(reader, prefix, name).shape), shape, "the model's shape")
    q, k, v, o = arch.q, arch.k, arch.v, arch.o
    for sub in (q, k, v, *arch.ffn_in):
        _expect(prefix, f"{sub}.weight", w[sub], (w[sub][0], hidden), f"producers read hidden_size={hidden}")
    for sub in (o, arch.ffn_out) if arch.moe is None else (o,):
        _expect(prefix, f"{sub}.weight", w[sub], (hidden, w[sub][1]), f"consumers write hidden_size={hidden}")
    if arch.fused:  # rows of fused producers hold several roles (see Architecture.fused): sizes checked above
        return
    heads_rows = w[q][0] - w[q][0] % head_dim
    _expect(prefix, f"{q}.weight", w[q], (heads_rows, hidden), f"whole heads of head_dim={head_dim}")
    _expect(prefix, f"{o}.weight", w[o], (hidden, w[q][0]), f"in-features = the rows of {q}.weight")
    kv_rows = w[k][0] - w[k][0] % head_dim
    _expect(prefix, f"{k}.weight", w[k], (kv_rows, hidden), f"whole KV heads of head_dim={head_dim}")
    _expect(prefix, f"{v}.weight", w[v], (w[k][0], hidden), f"as many rows as {k}.weight")
    if kv_rows and (heads_rows // head_dim) % (kv_rows // head_dim):
        raise ValueError(f"{prefix}{q}.weight holds {heads_rows // head_dim} heads, not a multiple of the "
                         f"{kv_rows // head_dim} KV heads of {prefix}{k}.weight: {FIX}")
    for sub in arch.ffn_in if arch.moe is None else ():
        _expect(prefix, f"{sub}.weight", w[sub], (w[arch.ffn_out][1], hidden),
                f"rows = the in-features of {arch.ffn_out}.weight")


def _expect(prefix: str, name: str, actual: tuple, expected: tuple, why: str) -> None:
    if actual != expected:
        raise ValueError(f"tensor {prefix}{name} has shape {list(actual)}, expected {list(expected)} ({why}): {FIX}")


def block_prefix(reader: ShardReader, arch: Architecture) -> str:
    """The checkpoint's name prefix of the block list, e.g. 'model.layers.'."""
    for path in arch.layers:
        if f"{path}.0." in {k[: len(path) + 3] for k in reader.keys()}:
            return f"{path}."
    raise ValueError(f"the checkpoint has no tensors under any of {arch.layers}")
