"""How held-out quality scales with calibration tokens: a table and a plot from SmolLM2 grid runs.

    python bench/smollm2_grid.py --criteria flap --modes liar --ratios 0.2 0.5 --nsamples N --name s11_calib_N
    python bench/calibration_size.py 32=bench/results/s11_calib_32.csv 64=bench/results/smollm2_grid_64.csv ...

Each argument is NSAMPLES=CSV: the grid's rows calibrated on NSAMPLES × --seqlen IMDB tokens (flap/liar,
uniform, dense calibration rows are kept). Writes bench/results/<--name>.{md,png}: held-out IMDB and Wikipedia
perplexity against calibration tokens, one line per ratio.
"""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def read_rows(specs: list[str], seqlen: int) -> list[dict]:
    rows = []
    for spec in specs:
        nsamples, path = spec.split("=", 1)
        with open(path, newline="") as f:
            for r in csv.DictReader(f):
                if (r["setting"], r["allocation"], r["calibration"], r["calib"]) == ("flap/liar", "uniform", "dense",
                                                                                     "imdb"):
                    rows.append({"tokens": int(nsamples) * seqlen, "ratio": float(r["ratio"]), "imdb": float(r["ppl"]),
                                 "wiki": float(r["ppl_wiki"]), "cpu_s": float(r["prune_cpu_seconds"]),
                                 "commit": r["commit"]})
    return sorted(rows, key=lambda r: (r["ratio"], r["tokens"]))


def write(rows: list[dict], name: str, sources: list[str]) -> None:
    lines = ["SmolLM2-135M, flap/liar, uniform, dense calibration on IMDB reviews (512-token windows); held-out "
             "perplexity on 16,352 IMDB tokens (dense 50.66) and 16,352 Wikipedia-passage tokens (dense 20.36). "
             f"Sources: {', '.join(sources)}.", "",
             "| calibration tokens | ratio | ppl IMDB | ppl wiki | prune CPU s | commit |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['tokens']:,} | {r['ratio']:.0%} | {r['imdb']:.2f} | {r['wiki']:.2f} | {r['cpu_s']:.0f} | "
              f"{r['commit']} |" for r in rows]
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_ratio = defaultdict(list)
    for r in rows:
        by_ratio[r["ratio"]].append(r)
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
    for ax, text, dense in ((axes[0], "imdb", 50.66), (axes[1], "wiki", 20.36)):
        for ratio, pts in by_ratio.items():
            ax.plot([p["tokens"] for p in pts], [p[text] for p in pts], marker="o", label=f"{ratio:.0%} removed")
        ax.axhline(dense, color="gray", linestyle="--", linewidth=0.8, label="dense")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("calibration tokens")
        ax.set_title(f"held-out {'IMDB' if text == 'imdb' else 'Wikipedia'} perplexity", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle("SmolLM2-135M, LIAR (flap, uniform): quality vs calibration size", fontsize=10)
    fig.tight_layout()
    fig.savefig(RESULTS / f"{name}.png", dpi=120)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", metavar="NSAMPLES=CSV")
    p.add_argument("--seqlen", type=int, default=512)
    p.add_argument("--name", default="calibration_size")
    args = p.parse_args()
    write(read_rows(args.runs, args.seqlen), args.name, [s.split("=", 1)[1] for s in args.runs])


if __name__ == "__main__":
    main()
