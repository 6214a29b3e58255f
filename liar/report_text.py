"""A run report as one screen of text: what was pruned, how well each block was repaired, where time went."""

from __future__ import annotations

from liar.report import LayerReport, ModuleReport, PruneReport

STAGES = ("read", "forward", "statistics", "solve", "write")


def _errors(m: ModuleReport) -> str:
    e = m.errors
    return "/".join(f"{e[k]:.2g}" if k in e else "-" for k in ("none", "bias", "liar"))


def _lam(m: ModuleReport) -> str:
    if m.lam is None:
        return "-"
    return f"{m.lam:.2g}" + ("*" if m.escalations or m.fallback else "")


ROW = "{:>5}  {:>7} {:>3}  {:>11}  {:>20}  {:>20}  {:>7} {:>7}"
HEADER = ROW.format("layer", "heads", "kv", "neurons", "attn err none/bias/liar", "ffn err none/bias/liar",
                    "λ attn", "λ ffn")
ALPHAS = "  {:>7} {:>7}"  # alpha='auto': the α each consumer chose


def _layer_row(layer: LayerReport, alphas: bool) -> str:
    a, f = layer.attn, layer.mlp
    kv = f"{len(a.kept_kv)}" if a.kept_kv is not None else "-"
    row = ROW.format(layer.index, f"{a.units_after}/{a.units_before}", kv, f"{f.units_after}/{f.units_before}",
                     _errors(a), _errors(f), _lam(a), _lam(f))
    chosen = ["-" if m.alpha is None else f"{m.alpha:.2g}" for m in (a, f)]
    return row + ALPHAS.format(*chosen) if alphas else row


def _stage_line(report: PruneReport) -> str | None:
    totals: dict[str, float] = {}
    for layer in report.layers:
        for stage, seconds in layer.stages.items():
            totals[stage] = totals.get(stage, 0.0) + seconds
    if not totals:
        return None
    order = [s for s in STAGES if s in totals] + sorted(set(totals) - set(STAGES))
    line = "  per stage, summed over layers: " + ", ".join(f"{s} {totals[s]:.1f} s" for s in order)
    hidden: dict[str, float] = {}
    for layer in report.layers:
        for stage, seconds in layer.overlapped.items():
            hidden[stage] = hidden.get(stage, 0.0) + seconds
    if hidden:
        line += "; in background threads meanwhile: " + ", ".join(f"{s} {v:.1f} s" for s, v in sorted(hidden.items()))
    return line


def _header(report: PruneReport) -> list[str]:
    m, c, cal = report.model, report.config, report.calibration
    lines = [
        f"model: {m.get('source')} ({m.get('architecture')})",
        f"  parameters: {m.get('params_before', 0):,} -> {m.get('params_after', 0):,} "
        f"(blocks -{m.get('block_fraction_removed', 0):.1%}, whole model -{m.get('model_fraction_removed', 0):.1%})",
        f"  config: ratio {c.get('ratio')}, selection {c.get('selection', 'criterion')} (criterion "
        f"{c.get('criterion')}), reconstruct {c.get('reconstruct')}"
        f"{'' if c.get('intercept', True) else ' (no bias)'}, allocation {c.get('allocation')}, gqa {c.get('gqa')}, "
        f"alpha {c.get('alpha')}",
        f"  calibration: {c.get('calibration')}, {cal.get('nsamples')} x {cal.get('seqlen')} = "
        f"{cal.get('tokens', 0):,} tokens of {cal.get('source')}",
    ]
    t = report.timings
    if t:
        lines.append("  time: " + ", ".join(f"{k} {v:.1f} s" for k, v in t.items()))
    stages = _stage_line(report)
    if stages:
        lines.append(stages)
    if report.output.get("path"):
        loader = "stock transformers" if report.output.get("stock_loadable") else "liar.load_pruned (liar_pruned)"
        lines.append(f"  output: {report.output['path']}, loads with {loader}")
    return lines


def _means(report: PruneReport) -> list[str]:
    lines = []
    for kind, name in (("attn", "attention"), ("mlp", "FFN")):
        e = report.mean_errors(kind)
        if e:
            lines.append(f"  mean relative error, {name}: " + ", ".join(f"{k} {v:.4f}" for k, v in e.items()))
        predicted = [getattr(layer, kind).predicted for layer in report.layers]
        if predicted and None not in predicted:
            lines.append(f"    liar error the {report.config.get('allocation')} allocation predicted: "
                         f"{sum(predicted) / len(predicted):.4f}")
    return lines


def render(report: PruneReport) -> str:
    """The summary `liar report DIR` prints."""
    lines = [f"command: {report.command}"] if report.command else []
    lines += _header(report) + _means(report)
    alphas = report.chosen_alphas()
    lines += [f"  {alphas}"] if alphas else []
    lines += ["", HEADER + (ALPHAS.format("α attn", "α ffn") if alphas else "")]
    lines += [_layer_row(layer, alphas is not None) for layer in report.layers]
    flagged = sum(m.escalations > 0 or m.fallback is not None for l in report.layers for m in (l.attn, l.mlp))
    lines.append(f"  * damping raised or fallback solve: {flagged} of {2 * len(report.layers)} solves"
                 if flagged else "  λ: every solve took the first damping; no fallbacks")
    lines += [f"  warning: {w}" for w in report.warnings]
    return "\n".join(lines)
