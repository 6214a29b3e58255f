"""How much does the kept set depend on the calibration sample? SmolLM2-135M pruned from disjoint IMDB samples.

    python bench/selection_stability.py --ratio 0.2 --samples 3 --selections criterion reconstruction

Sample i is `--nsamples` × `--seqlen` tokens from every `--samples`-th IMDB calibration review starting at i, so
the samples share no document. Each (selection, sample) prunes the embedded SmolLM2 (flap criterion for the
criterion selection, LIAR, uniform allocation) into out/stability/; then, per selection, the kept-set overlap of
every pair of samples (the fraction of pruned query heads and of pruned FFN neurons the two runs share) and the
held-out perplexity of each run (IMDB, and every other `--texts` corpus; a rerun reuses finished prunes and only
evaluates). Rows go to
bench/results/selection_stability_r<ratio>.{csv,md}.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import statistics
from pathlib import Path

import liar
from bench.smollm2_grid import commit
from liar import corpora, data
from liar.eval import perplexity
from liar.io.load import load_pruned, load_tokenizer, resolve_source

RESULTS = Path(__file__).parent / "results"
OUT = Path("out/stability")


def pruned_sets(report) -> tuple[set, set]:
    """(pruned query heads, pruned neurons) as (layer, index) pairs."""
    heads, neurons = set(), set()
    for layer in report.layers:
        heads |= {(layer.index, h) for h in set(range(layer.attn.units_before)) - set(layer.attn.kept)}
        neurons |= {(layer.index, n) for n in set(range(layer.mlp.units_before)) - set(layer.mlp.kept)}
    return heads, neurons


def shared(a: set, b: set) -> float:
    return len(a & b) / max(len(a), 1)


def heldout(tokenizer, text: str, tokens: int):
    return data.token_stream(tokenizer, corpora.texts(text, "heldout"), tokens)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ratio", type=float, default=0.2)
    p.add_argument("--samples", type=int, default=3)
    p.add_argument("--selections", nargs="+", default=["criterion", "reconstruction"])
    p.add_argument("--texts", nargs="+", default=["imdb"])
    p.add_argument("--nsamples", type=int, default=64)
    p.add_argument("--seqlen", type=int, default=512)
    p.add_argument("--eval-tokens", type=int, default=16384)
    args = p.parse_args()
    source = resolve_source(None)
    tokenizer = load_tokenizer(source)
    texts = data.imdb_texts("calib")
    evals = {t: heldout(tokenizer, t, args.eval_tokens) for t in args.texts}
    rows = []
    for selection in args.selections:
        sets = []
        for i in range(args.samples):
            ids = data.calibration_ids(tokenizer, texts[i::args.samples], args.nsamples, args.seqlen, seed=0)
            out = OUT / f"r{args.ratio}_{selection}_{i}"
            config = liar.PruneConfig(ratio=args.ratio, selection=selection, nsamples=args.nsamples,
                                      seqlen=args.seqlen, overwrite=True)
            done = out / "liar_report.json"
            report = liar.PruneReport.load(done) if done.exists() else liar.prune(source, out, config, calibration=ids)
            sets.append(pruned_sets(report))
            model = load_pruned(out)
            ppl = {t: perplexity(model, ids_, seqlen=512)["ppl"] for t, ids_ in evals.items()}
            rows.append({"selection": selection, "sample": i, **{f"ppl_{t}": v for t, v in ppl.items()}})
            print(selection, i, ppl, flush=True)
        pairs = list(itertools.combinations(range(args.samples), 2))
        for kind, k in (("heads", 0), ("neurons", 1)):
            overlaps = [shared(sets[a][k], sets[b][k]) for a, b in pairs]
            rows.append({"selection": selection, "sample": f"overlap {kind}", "mean": statistics.mean(overlaps),
                         "min": min(overlaps)})
    write(rows, args)


def write(rows: list[dict], args) -> None:
    RESULTS.mkdir(exist_ok=True)
    name = f"selection_stability_r{args.ratio}"
    fields = sorted({k for r in rows for k in r}, key=lambda k: (k != "selection", k != "sample", k))
    with (RESULTS / f"{name}.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    lines = [f"SmolLM2-135M, ratio {args.ratio}, LIAR, uniform, {args.samples} disjoint IMDB samples of "
             f"{args.nsamples}×{args.seqlen} tokens; commit {commit()}", "",
             "| selection | " + " | ".join(f"held-out ppl {t} (per sample; spread)" for t in args.texts)
             + " | pruned heads shared | pruned neurons shared |", "|---" * (3 + len(args.texts)) + "|"]
    for selection in args.selections:
        runs = [r for r in rows if r["selection"] == selection and isinstance(r["sample"], int)]
        cells = []
        for t in args.texts:
            v = [r[f"ppl_{t}"] for r in runs]
            cells.append(", ".join(f"{x:.2f}" for x in v) + f"; {max(v) - min(v):.2f}")
        over = {r["sample"]: r for r in rows if r["selection"] == selection and not isinstance(r["sample"], int)}
        lines.append(f"| {selection} | " + " | ".join(cells) + f" | {over['overlap heads']['mean']:.0%} "
                     f"(min {over['overlap heads']['min']:.0%}) | {over['overlap neurons']['mean']:.0%} "
                     f"(min {over['overlap neurons']['min']:.0%}) |")
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
