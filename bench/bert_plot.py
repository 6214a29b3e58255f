"""Tables and the accuracy-vs-ratio figure of the BERT grid (rows: bench/bert_grid.py's Row)."""

from __future__ import annotations

from pathlib import Path

PAPER_KEEPS = 0.98  # LIAR paper: a BERT model keeps 98% of its accuracy at 50% of parameters removed
MODES = ("none", "bias", "liar")
STYLES = {"none": ":", "bias": "--", "liar": "-"}


def _pivot(rows, variant: str) -> list[str]:
    ratios = sorted({r.ratio for r in rows})
    lines = [f"### {variant} allocation: test accuracy (%)", "",
             "| criterion | reconstruct | " + " | ".join(f"{x:.0%}" for x in ratios) + " |",
             "|---|---|" + "---|" * len(ratios)]
    cells = {(r.criterion, r.reconstruct, r.ratio): r.accuracy for r in rows if r.variant == variant}
    for criterion in dict.fromkeys(r.criterion for r in rows):
        for mode in MODES:
            accs = [cells.get((criterion, mode, x)) for x in ratios]
            if any(a is not None for a in accs):
                lines.append(f"| {criterion} | {mode} | "
                             + " | ".join("" if a is None else f"{100 * a:.1f}" for a in accs) + " |")
    return lines + [""]


def _kept_at_half(rows) -> list[str]:
    half = [r for r in rows if abs(r.ratio - 0.5) < 1e-9]
    if not half:
        return []
    variants = list(dict.fromkeys(r.variant for r in half))
    lines = [f"### 50% removed: fraction of dense accuracy kept (LIAR paper: {PAPER_KEEPS:.0%})", "",
             "| criterion | reconstruct | " + " | ".join(variants) + " |", "|---|---|" + "---|" * len(variants)]
    for criterion in dict.fromkeys(r.criterion for r in half):
        for mode in MODES:
            kept = {r.variant: f"{r.fraction_of_dense:.1%}" for r in half
                    if (r.criterion, r.reconstruct) == (criterion, mode)}
            if kept:
                lines.append(f"| {criterion} | {mode} | " + " | ".join(kept.get(v, "") for v in variants) + " |")
    return lines + [""]


def markdown(rows, command: str) -> str:
    first = rows[0]
    lines = [
        "## BERT reproduction: all-MiniLM-L6-v2 fine-tuned on Rotten Tomatoes, pruned without retraining", "",
        (f"Dense test accuracy: {100 * first.dense_accuracy:.2f}% on {first.n} held-out sentences. Calibration: "
         f"{first.calib_sentences} unlabeled training sentences ({first.calib_tokens} tokens). Ratio = fraction of "
         f"encoder block parameters removed (embeddings and the classifier excluded). {first.device}, torch "
         f"{first.torch}, transformers {first.transformers}, liar {first.liar}, kernels {first.backend}, commit "
         f"{first.commit}. Command: `{command}`."), "",
    ]
    for variant in dict.fromkeys(r.variant for r in rows):
        lines += _pivot(rows, variant)
    lines += _kept_at_half(rows)
    lines += ["### All runs", "",
              ("| ratio | allocation | criterion | reconstruct | accuracy | of dense | blocks removed | model removed "
               "| heads | neurons | prune s | eval s |"), "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r.ratio:.0%} | {r.variant} | {r.criterion} | {r.reconstruct} | {100 * r.accuracy:.2f} "
              f"| {r.fraction_of_dense:.1%} | {r.block_fraction_removed:.1%} | {r.model_fraction_removed:.1%} "
              f"| {r.heads_after} | {r.neurons_after} | {r.prune_seconds:.0f} | {r.eval_seconds:.0f} |" for r in rows]
    return "\n".join(lines) + "\n"


def plot(rows, path: Path) -> None:
    """One panel per allocation × criterion, one line per reconstruction; dense accuracy and chance (the
    classes are balanced) as references."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    allocations = list(dict.fromkeys(r.variant for r in rows))
    criteria = list(dict.fromkeys(r.criterion for r in rows))
    fig, axes = plt.subplots(len(allocations), len(criteria), figsize=(3.2 * len(criteria), 2.8 * len(allocations)),
                             sharex=True, sharey=True, squeeze=False)
    for (i, allocation), (j, criterion) in ((a, c) for a in enumerate(allocations) for c in enumerate(criteria)):
        ax = axes[i][j]
        for mode in MODES:
            pts = sorted((r.ratio, r.accuracy) for r in rows
                         if (r.variant, r.criterion, r.reconstruct) == (allocation, criterion, mode))
            if pts:
                ax.plot(*zip(*pts), STYLES[mode], marker="o", markersize=3, label=mode)
        ax.axhline(rows[0].dense_accuracy, color="gray", linewidth=0.8, linestyle="--", label="dense")
        ax.axhline(0.5, color="gray", linewidth=0.6, linestyle=":", label="chance")
        ax.set_title(f"{criterion}, {allocation}", fontsize=9)
        ax.grid(alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("block parameters removed")
    for row in axes:
        row[0].set_ylabel("test accuracy")
    axes[0][0].legend(fontsize=7)
    fig.suptitle("MiniLM-L6 on Rotten Tomatoes, pruned without retraining", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
