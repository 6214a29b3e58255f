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
from dataclasses import dataclass
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


@dataclass(frozen=True)
class ExportPlan:
    """How the pruned model is described: stock config (uniform, expressible) or liar's per-layer format."""

    stock: bool
    sizes: list[LayerSizes]
    bias_flags: dict[str, str]  # block kind -> config flag switched on (its linears all get a bias)


def plan_export(arch: Architecture, config, sizes: list[LayerSizes], consumer_bias: dict[str, bool]) -> ExportPlan:
    """consumer_bias[kind]: does any pruned layer's consumer of that block carry a bias."""
    uniform = len(set(sizes)) == 1 and arch.stock_expresses_heads(config, sizes[0].num_heads)
    flags, expressible = {}, True
    for kind in ("attn", "mlp"):
        flag = arch.bias_flag(kind)
        already = kind in arch.native_bias or (flag is not None and getattr(config, flag, False))
        if consumer_bias[kind] and not already:
            expressible &= flag is not None
            if flag is not None:
                flags[kind] = flag
    stock = uniform and expressible
    return ExportPlan(stock=stock, sizes=sizes, bias_flags=flags if stock else {})


def add_flagged_biases(arch: Architecture, layer: nn.Module, plan: ExportPlan) -> None:
    """A switched-on config flag gives every linear of its block a bias: zeros where there was none."""
    switched = set(plan.bias_flags.values())  # one flag may cover both blocks (OPT's enable_bias)
    for kind in ("attn", "mlp"):
        if arch.bias_flag(kind) not in switched:
            continue
        for path in arch.linears(layer, kind):
            ensure_bias(layer, path)


def apply_plan(arch: Architecture, config, plan: ExportPlan, head_dim: int) -> None:
    config.head_dim = head_dim
    if plan.stock:
        arch.apply_sizes(config, plan.sizes[0], head_dim)
        for flag in plan.bias_flags.values():
            setattr(config, flag, True)
        config.__dict__.pop(LAYER_SIZES_KEY, None)
    else:
        setattr(config, LAYER_SIZES_KEY, [s.to_dict() for s in plan.sizes])


def finalize_config(arch: Architecture, model: nn.Module) -> bool:
    """Make an in-memory pruned model and its config agree on the export; True when stock-loadable."""
    head_dim = arch.head_dim(model.config)
    layers = arch.layer_list(model)
    consumer_bias = {kind: any(arch.consumer_has_bias(l, kind) for l in layers) for kind in ("attn", "mlp")}
    plan = plan_export(arch, model.config, [arch.layer_sizes(l, head_dim) for l in layers], consumer_bias)
    for layer in layers:
        add_flagged_biases(arch, layer, plan)
    apply_plan(arch, model.config, plan, head_dim)
    return plan.stock


def export_note(arch: Architecture) -> str:
    """Why an output is not stock-loadable, for the report."""
    return arch.stock_note or ("per-layer widths, or biases the stock config cannot carry: load the output with "
                               "liar.load_pruned (use --allocation uniform and/or --no-bias for a stock checkpoint)")


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
    return sum(arch.block_params(layer, kind) for layer in arch.layer_list(model) for kind in ("attn", "mlp"))


