"""BERT reproduction: test accuracy of the fine-tuned MiniLM classifier pruned without retraining.

    nice -n 10 python -m bench.bert_grid            # the full grid: 6 ratios x 4 criteria x 3 modes x 2 allocations

The classifier is all-MiniLM-L6-v2 fine-tuned once on the Rotten Tomatoes training split (bench/bert_task.py,
cached). Every setting prunes a fresh copy, calibrating on unlabeled training sentences (whole sentences,
padded per batch, padding masked), and is scored on the held-out test split. Rows go to
bench/results/<name>.csv, tables to <name>.md and accuracy-vs-ratio curves to <name>.png, tagged with
device, versions and commit. --resume skips settings already in the CSV (a grid takes about an hour here).
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse
import copy
import csv
import dataclasses
import itertools
import logging
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers

import liar
from bench import bert_plot, bert_task
from bench.common import RESULTS, device_name, git_commit
from liar import data
from liar.eval import accuracy
from liar.report import versions


@dataclass(frozen=True)
class Row:
    ratio: float
    criterion: str
    reconstruct: str
    allocation: str
    accuracy: float
    fraction_of_dense: float
    n: int
    dense_accuracy: float
    block_fraction_removed: float
    model_fraction_removed: float
    params_after: int
    heads_after: int
    neurons_after: int
    calib_sentences: int
    calib_tokens: int
    attn_err_liar: float
    mlp_err_liar: float
    prune_seconds: float
    eval_seconds: float
    backend: str  # the kernels that ran (gram_update/liar_solve)
    device: str
    torch: str
    transformers: str
    liar: str
    commit: str
    settings: str = ""  # further PruneConfig fields (--set), e.g. "alpha=auto"

    @property
    def variant(self) -> str:
        """What the tables group by: the allocation and any further settings."""
        return f"{self.allocation} {self.settings}".strip()


def run_setting(dense, tokenizer, calib, test, dense_acc, setting, args) -> Row:
    ratio, criterion, mode, allocation = setting
    model = copy.deepcopy(dense)
    config = liar.PruneConfig(ratio=ratio, criterion=criterion, reconstruct=mode, allocation=allocation,
                              nsamples=args.nsamples, seqlen=args.seqlen, batch_size=args.batch_size, **args.extra)
    start = time.perf_counter()
    report = liar.prune(model, None, config, tokenizer=tokenizer, calibration=calib)
    pruned = time.perf_counter()
    result = accuracy(model, tokenizer, *test, batch_size=args.batch_size, max_length=args.seqlen)
    v = versions()
    return Row(
        ratio=ratio, criterion=criterion, reconstruct=mode, allocation=allocation, accuracy=result["accuracy"],
        fraction_of_dense=result["accuracy"] / dense_acc, n=result["n"], dense_accuracy=dense_acc,
        block_fraction_removed=report.model["block_fraction_removed"],
        model_fraction_removed=report.model["model_fraction_removed"], params_after=report.model["params_after"],
        heads_after=sum(l.attn.units_after for l in report.layers),
        neurons_after=sum(l.mlp.units_after for l in report.layers),
        calib_sentences=report.calibration["nsamples"], calib_tokens=report.calibration["tokens"],
        attn_err_liar=report.mean_errors("attn")["liar"], mlp_err_liar=report.mean_errors("mlp")["liar"],
        prune_seconds=pruned - start, eval_seconds=time.perf_counter() - pruned,
        backend=f"{report.backends['gram_update']}/{report.backends['liar_solve']}",
        device=device_name(report.backends["device"]), torch=v["torch"], transformers=v["transformers"],
        liar=v["liar"], commit=git_commit(), settings=" ".join(args.set),
    )


def read_rows(path: Path) -> list[Row]:
    if not path.is_file():
        return []
    types = {f.name: f.type for f in dataclasses.fields(Row)}
    cast = {"float": float, "int": int, "str": str}
    with path.open(newline="") as f:
        return [Row(**{k: cast[types[k]](v) for k, v in r.items()}) for r in csv.DictReader(f)]


def write(rows: list[Row], name: str, command: str) -> None:
    RESULTS.mkdir(exist_ok=True)
    with (RESULTS / f"{name}.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[x.name for x in dataclasses.fields(Row)])
        writer.writeheader()
        writer.writerows(dataclasses.asdict(r) for r in rows)
    (RESULTS / f"{name}.md").write_text(bert_plot.markdown(rows, command))
    bert_plot.plot(rows, RESULTS / f"{name}.png")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ratios", type=float, nargs="+", default=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    p.add_argument("--criteria", nargs="+", default=["magnitude", "wanda", "flap", "random"])
    p.add_argument("--modes", nargs="+", default=["none", "bias", "liar"])
    p.add_argument("--allocations", nargs="+", default=["uniform", "global"])
    p.add_argument("--nsamples", type=int, default=512, help="calibration sentences (~14k tokens)")
    p.add_argument("--seqlen", type=int, default=128, help="truncation length (the longest sentence has ~80 tokens)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="further PruneConfig fields for every run, e.g. alpha=auto calibration=sequential")
    p.add_argument("--name", default="bert_grid")
    p.add_argument("--resume", action="store_true",
                   help="keep the rows already in the CSV and skip their settings (a finished grid: redraw only)")
    args = p.parse_args()
    fields = {f.name: f.type for f in dataclasses.fields(liar.PruneConfig)}
    args.extra = {key: _value(value) for key, value in (kv.split("=", 1) for kv in args.set) if key in fields}
    unknown = [kv for kv in args.set if kv.split("=", 1)[0] not in fields]
    if unknown:
        p.error(f"--set {' '.join(unknown)}: not PruneConfig fields")
    return args


def _value(text: str):
    """A --set value: a number where it reads as one, else the text (alpha=auto, calibration=sequential)."""
    try:
        return float(text)
    except ValueError:
        return text


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.WARNING)
    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    folder = bert_task.finetuned()
    dense = liar.load_pruned(folder)
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    calib, test = data.rotten_tomatoes("train")[0], data.rotten_tomatoes("test")
    dense_acc = accuracy(dense, tokenizer, *test, batch_size=args.batch_size, max_length=args.seqlen)["accuracy"]
    print(f"dense accuracy {dense_acc:.4f} on {len(test[0])} test sentences", flush=True)
    rows = read_rows(RESULTS / f"{args.name}.csv") if args.resume else []
    command = shlex.join(["python", "-m", "bench.bert_grid", *sys.argv[1:]])
    if os.environ.get("LIAR_DISABLE_EXT"):
        command = f"LIAR_DISABLE_EXT={os.environ['LIAR_DISABLE_EXT']} {command}"
    settings = " ".join(args.set)
    done = {(r.ratio, r.criterion, r.reconstruct, r.allocation) for r in rows if r.settings == settings}
    grid = itertools.product(args.ratios, args.criteria, args.modes, args.allocations)
    pending = [s for s in grid if s not in done]
    for setting in pending:
        row = run_setting(dense, tokenizer, calib, test, dense_acc, setting, args)
        rows.append(row)
        print(f"{row.ratio:.0%} {row.variant} {row.criterion}/{row.reconstruct}: accuracy {row.accuracy:.4f} "
              f"({row.fraction_of_dense:.1%} of dense; prune {row.prune_seconds:.0f} s, eval {row.eval_seconds:.0f} s)",
              flush=True)
        write(rows, args.name, command)
    if rows and not pending:  # a finished grid resumed: redraw the tables and the figure
        write(rows, args.name, command)


if __name__ == "__main__":
    main()
