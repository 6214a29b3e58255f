"""Write a pruned model as a real, smaller safetensors checkpoint, atomically.

Uniform widths (and biases the config can express) → the stock config with the new sizes: plain
`transformers` loads it. Otherwise the base config plus `liar_layer_sizes`, under model_type
"liar_pruned" so that stock transformers refuses it instead of silently re-initializing weights; it is
loaded by `liar.load_pruned`.
The checkpoint is written to a temporary folder beside the destination and renamed into place, so a
crash never leaves a half-written output; the input folder is never written to.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import tempfile
from pathlib import Path

from torch import nn

from liar.io.load import LAYER_SIZES_KEY, mark_per_layer_format
from liar.models.base import Architecture, LayerSizes, ensure_bias
from liar.report import PruneReport

log = logging.getLogger(__name__)

REPORT_NAME = "liar_report.json"


def check_destination(out: Path, source: Path | None, overwrite: bool) -> None:
    """Refuse outputs that would overwrite or live inside the input, or clobber an existing folder."""
    out = out.resolve()
    if source is not None:
        src = source.resolve()
        if out == src or src in out.parents:
            raise ValueError(f"the output {out} is inside the input model folder {src}; choose another --out")
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists; choose another --out or pass --overwrite")


def _sizes(arch: Architecture, model: nn.Module, head_dim: int) -> list[LayerSizes]:
    return [arch.layer_sizes(layer, head_dim) for layer in arch.layer_list(model)]


def _bias_flag_needed(arch: Architecture, model: nn.Module, kind: str) -> tuple[bool, str | None]:
    """(can the stock config express this block's consumer biases, the config flag to switch on)."""
    consumers = [arch.attn_consumer(l) if kind == "attn" else arch.ffn_consumer(l) for l in arch.layer_list(model)]
    flag = arch.bias_flag(kind)
    already = kind in arch.native_bias or (flag is not None and getattr(model.config, flag, False))
    if already or all(c.bias is None for c in consumers):
        return True, None
    return flag is not None, flag


def finalize_config(arch: Architecture, model: nn.Module) -> bool:
    """Make model.config describe the pruned model; returns True when stock transformers can load it."""
    config = model.config
    head_dim = arch.head_dim(config)
    sizes = _sizes(arch, model, head_dim)
    config.head_dim = head_dim
    needed = {kind: _bias_flag_needed(arch, model, kind) for kind in ("attn", "mlp")}
    if len(set(sizes)) == 1 and all(ok for ok, _ in needed.values()) and arch.heads_ok(config, sizes[0].num_heads):
        arch.apply_sizes(config, sizes[0], head_dim)
        for kind, (_, flag) in needed.items():
            if flag is not None:
                setattr(config, flag, True)
                for layer in arch.layer_list(model):
                    for path in arch.linears(layer, kind):
                        ensure_bias(layer, path)
        config.__dict__.pop(LAYER_SIZES_KEY, None)
        return True
    setattr(config, LAYER_SIZES_KEY, [s.to_dict() for s in sizes])
    return False


def _needed_bytes(model: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in model.state_dict().values()) + (64 << 20)


def save_pruned(model: nn.Module, tokenizer, out: Path, report: PruneReport, overwrite: bool) -> list[str]:
    """Write weights, config, tokenizer and report to `out` atomically; returns the file names."""
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    need, free = _needed_bytes(model), shutil.disk_usage(out.parent).free
    if free < need:
        raise OSError(errno.ENOSPC, f"{out.parent} has {free / 2**20:.0f} MiB free but the checkpoint needs "
                      f"about {need / 2**20:.0f} MiB; free space or choose another --out")
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        model.save_pretrained(tmp)
        if hasattr(model.config, LAYER_SIZES_KEY):
            mark_per_layer_format(tmp / "config.json")
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        report.output["files"] = sorted(p.name for p in tmp.iterdir()) + [REPORT_NAME]
        report.save(tmp / REPORT_NAME)
        _swap_into_place(tmp, out, overwrite)
    except OSError as err:
        if err.errno == errno.ENOSPC:
            raise OSError(errno.ENOSPC, f"disk full while writing {out}; nothing was left behind") from err
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return report.output["files"]


def _swap_into_place(tmp: Path, out: Path, overwrite: bool) -> None:
    if not out.exists():
        os.replace(tmp, out)
        return
    if not overwrite:
        raise FileExistsError(f"{out} appeared while pruning; pass --overwrite to replace it")
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    os.replace(out, old / "previous")
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def block_params(arch: Architecture, model: nn.Module) -> int:
    return sum(lin.weight.numel() + (0 if lin.bias is None else lin.bias.numel())
               for layer in arch.layer_list(model) for kind in ("attn", "mlp")
               for lin in arch.linears(layer, kind).values())


