"""A picture of a run: units kept per layer, and the relative calibration error of none / bias / liar."""

from __future__ import annotations

from pathlib import Path

from liar.report import PruneReport


def _pyplot():
    try:
        import matplotlib
    except ImportError as err:
        raise RuntimeError("--plot needs matplotlib, the optional extra `liar[plot]`: install it with "
                           "`.venv/bin/python -m pip install 'matplotlib>=3.7'` (or `pip install -e '.[plot]'`)"
                           ) from err
    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    return plt


def plot(report: PruneReport, path: str | Path) -> Path:
    """Write a PNG: the fraction of query heads and FFN neurons kept per layer, then the relative output error of
    none / bias / liar per layer for the attention and the FFN consumer."""
    plt = _pyplot()
    layers = [l.index for l in report.layers]
    fig, (kept_ax, attn_ax, ffn_ax) = plt.subplots(3, 1, figsize=(9, 9), sharex=True, constrained_layout=True,
                                                   gridspec_kw={"height_ratios": [1, 1.4, 1.4]})
    heads = [l.attn.units_after / l.attn.units_before for l in report.layers]
    neurons = [l.mlp.units_after / l.mlp.units_before for l in report.layers]
    width = 0.4
    kept_ax.bar([i - width / 2 for i in layers], heads, width, label="query heads kept")
    kept_ax.bar([i + width / 2 for i in layers], neurons, width, label="FFN neurons kept")
    kept_ax.set_ylim(0, 1.25)
    kept_ax.set_ylabel("fraction kept")
    kept_ax.set_title("units kept per layer (the rest is pruned)", fontsize=9)
    kept_ax.legend(loc="upper center", ncol=2, fontsize=8)
    for ax, kind, name in ((attn_ax, "attn", "attention (o_proj)"), (ffn_ax, "mlp", "FFN (down_proj)")):
        for mode, style in (("none", "s:"), ("bias", "^--"), ("liar", "o-")):
            values = [getattr(l, kind).errors.get(mode) for l in report.layers]
            if all(v is not None for v in values):
                ax.plot(layers, values, style, label=mode, markersize=4)
        ax.set_yscale("log")
        ax.set_ylabel("relative error")
        ax.set_title(f"{name}: output error on calibration tokens", fontsize=9)
        ax.legend(fontsize=8)
        ax.grid(True, which="major", alpha=0.3)
    ffn_ax.set_xlabel("layer")
    m, c = report.model, report.config
    fig.suptitle(f"{Path(str(m.get('source'))).name}: ratio {c.get('ratio')}, {c.get('criterion')}/"
                 f"{c.get('reconstruct')}, blocks -{m.get('block_fraction_removed', 0):.1%}", fontsize=11)
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
