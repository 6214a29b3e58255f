"""The run report: what was kept, how every system was solved, the errors, timings and provenance."""

from __future__ import annotations

import json
import logging
import platform
import sys
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from liar.ranges import from_ranges, to_ranges

log = logging.getLogger(__name__)


@dataclass
class ModuleReport:
    """One pruned block of one layer ('attn' or 'mlp')."""

    kind: str
    units_before: int  # heads or neurons
    units_after: int
    kept: list[int]  # query heads or neurons kept
    kept_kv: list[int] | None = None  # KV heads kept (attention only)
    reconstruct: str = "liar"
    lam: float | None = None
    alpha: float | None = None  # the damping α of the solve: the configured one, or the one alpha='auto' chose
    alpha_heldout: dict[str, float] | None = None  # alpha='auto': held-out relative error of each α tried
    escalations: int = 0
    fallback: str | None = None
    errors: dict[str, float] = field(default_factory=dict)  # relative output error on calibration data
    predicted: float | None = None  # allocation 'error': the relative LIAR error the allocation expected
    tokens: int = 0
    # Mixture of experts only: per expert {tokens, kept, errors, fallback, lam}, and the experts kept.
    experts: list[dict] | None = None
    kept_experts: list[int] | None = None


@dataclass
class LayerReport:
    index: int
    attn: ModuleReport
    mlp: ModuleReport
    seconds: float = 0.0
    # seconds the main thread spent on this block: read (waiting for it), forward, statistics, solve, write
    stages: dict[str, float] = field(default_factory=dict)
    # seconds background threads spent reading / writing it while other blocks computed (not in `seconds`)
    overlapped: dict[str, float] = field(default_factory=dict)
    params: int = 0  # attention + FFN linear parameters after pruning (biases included)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> LayerReport:
        return cls(**{**d, "attn": _module(dict(d["attn"])), "mlp": _module(dict(d["mlp"]))})


@dataclass
class PruneReport:
    config: dict
    model: dict = field(default_factory=dict)  # source, architecture, parameter counts and fractions
    calibration: dict = field(default_factory=dict)
    layers: list[LayerReport] = field(default_factory=list)
    backends: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    output: dict = field(default_factory=dict)  # path, stock_loadable, files
    warnings: list[str] = field(default_factory=list)
    command: str = ""
    versions: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    def save(self, path: str | Path) -> None:
        """Indented JSON, except one line per layer with kept indices as ranges ("0-17,19"): SmolLM2-135M at 20%
        went from 419 KB / 39,378 lines (one line per index) to 79 KB / 138 lines."""
        raw = self.to_dict()
        layers = [_compact_layer(l) for l in raw.pop("layers")]
        body = json.dumps(raw, indent=1, ensure_ascii=False)[:-2]  # without the closing "\n}"
        rows = ",\n".join("  " + json.dumps(l, ensure_ascii=False) for l in layers)
        text = f'{body},\n "layers": [\n{rows}\n ]\n}}\n' if layers else f'{body},\n "layers": []\n}}\n'
        Path(path).write_text(text, encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> PruneReport:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
        raw["layers"] = [LayerReport.from_dict(layer) for layer in raw["layers"]]
        return cls(**raw)

    def add_solver_warnings(self) -> None:
        """Every escalated damping or fallback solve, as a warning (logged and kept in the report)."""
        for layer in self.layers:
            for m in (layer.attn, layer.mlp):
                if m.escalations or m.fallback:
                    msg = (f"layer {layer.index} {m.kind}: damping raised {m.escalations}x to λ={m.lam:.3g}"
                           + (f", solved by {m.fallback}" if m.fallback else ""))
                    self.warnings.append(msg)
                    log.warning(msg)

    def stage_seconds(self) -> dict[str, float]:
        """Seconds per stage (read, forward, statistics, solve, write) summed over the blocks."""
        totals: dict[str, float] = {}
        for layer in self.layers:
            for stage, seconds in layer.stages.items():
                totals[stage] = totals.get(stage, 0.0) + seconds
        return totals

    def time_split(self) -> str:
        phases = ", ".join(f"{k} {v:.1f}" for k, v in self.timings.items() if k not in ("total", "blocks"))
        stages = ", ".join(f"{k} {v:.1f}" for k, v in self.stage_seconds().items())
        return f"{phases}, blocks {self.timings.get('blocks', 0):.1f} [{stages}]"

    def mean_errors(self, kind: str) -> dict[str, float]:
        """Mean relative calibration error per reconstruction mode over layers, for 'attn' or 'mlp' (the modes
        every layer reports: none and bias always, liar where it was solved)."""
        rows = [getattr(l, kind).errors for l in self.layers]
        modes = [m for m in ("none", "bias", "liar") if rows and all(m in r for r in rows)]
        return {m: sum(r[m] for r in rows) / len(rows) for m in modes}

    def chosen_alphas(self) -> str | None:
        """alpha='auto': how many consumers chose each α, attention and FFN apart; None when α was fixed."""
        parts = []
        for kind in ("attn", "mlp"):
            chosen = Counter(getattr(l, kind).alpha for l in self.layers if getattr(l, kind).alpha_heldout)
            if chosen:
                parts.append(f"{kind} " + ", ".join(f"{a:.2g} x{c}" for a, c in sorted(chosen.items())))
        return "damping chosen per consumer (alpha: layers): " + "; ".join(parts) if parts else None

    def summary(self) -> str:
        m = self.model
        lines = [
            f"pruned {m.get('source')} ({m.get('architecture')}) on {self.backends.get('device', '?')}",
            f"  parameters: {m.get('params_before', 0):,} -> {m.get('params_after', 0):,} "
            f"(blocks {-m.get('block_fraction_removed', 0):+.1%}, whole model {-m.get('model_fraction_removed', 0):+.1%})",
            f"  time: {self.timings.get('total', 0):.1f} s ({self.time_split()})",
            f"  kernels: {', '.join(f'{k}={v}' for k, v in self.backends.items() if k != 'device')}",
        ]
        for kind in ("attn", "mlp"):
            e = self.mean_errors(kind)
            if e:
                lines.append(f"  mean relative error ({kind}): " + ", ".join(f"{k} {v:.4f}" for k, v in e.items()))
        if self.chosen_alphas():
            lines.append("  " + self.chosen_alphas())
        if self.output.get("path"):
            loader = "stock transformers" if self.output.get("stock_loadable") else "liar.load_pruned"
            size = f"{self.output.get('bytes', 0) / 2**20:,.0f} MiB of {self.output.get('dtype', '?')} weights, "
            lines.append(f"  output: {self.output['path']} ({size}loads with {loader}); report: "
                         f"{self.output.get('report')}")
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def _compact_layer(layer: dict) -> dict:
    for kind in ("attn", "mlp"):
        m = layer[kind]
        m["kept"] = to_ranges(m["kept"])
        if m["kept_kv"] is not None:
            m["kept_kv"] = to_ranges(m["kept_kv"])
    return layer


def _module(raw: dict) -> ModuleReport:
    """A ModuleReport from either layout: index ranges ("0-17,19") or plain lists (older reports)."""
    for key in ("kept", "kept_kv"):
        if isinstance(raw.get(key), str):
            raw[key] = from_ranges(raw[key])
    return ModuleReport(**raw)


def versions() -> dict[str, str]:
    import torch
    import transformers

    from liar import __version__

    return {"liar": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "python": sys.version.split()[0], "platform": platform.platform()}
