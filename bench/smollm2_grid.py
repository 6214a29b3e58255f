"""Quality grid on the real SmolLM2-135M: held-out perplexity and wall time per pruning setting.

    python bench/smollm2_grid.py --ratios 0.2 0.5 --criteria magnitude wanda flap random \
        --modes none bias liar --allocations uniform --name smollm2_grid
    python bench/smollm2_grid.py --ratios 0.2 0.5 --criteria flap --modes liar --alphas 0.01 auto --ood-tokens 16384 \
        --name smollm2_alpha

Every run prunes the embedded SmolLM2-135M (fp32, CPU) calibrated on the IMDB calibration split and is
scored on the held-out split (text never used for calibration) and, with --ood-tokens, on out-of-domain text
(the Wikipedia passages of BoolQ's validation split). Rows go to bench/results/<name>.csv and a markdown table to
bench/results/<name>.md, tagged with device, versions and commit; with --alphas auto, the α each consumer chose goes
to bench/results/<name>_alpha.csv and its distribution to the markdown.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import itertools
import statistics
import subprocess
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch

import liar
from liar import data
from liar.config import number_or_auto
from liar.eval import perplexity
from liar.io.load import load_pruned, load_tokenizer, resolve_source
from liar.report import PruneReport, versions
from liar.zeroshot_data import load_validation

RESULTS = Path(__file__).parent / "results"


@dataclass(frozen=True)
class Setting:
    ratio: float
    criterion: str
    reconstruct: str
    allocation: str
    gqa: str
    calibration: str = "dense"
    alpha: float | str = 1e-2


@dataclass(frozen=True)
class Row:
    setting: str
    ratio: float
    criterion: str
    reconstruct: str
    allocation: str
    gqa: str
    calibration: str
    alpha: str
    ppl: float
    ood_ppl: float | None
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


def ood_stream(tokenizer, tokens: int) -> torch.Tensor:
    """Out-of-domain text: BoolQ's Wikipedia passages (validation split), each once, in order."""
    passages = list(dict.fromkeys(load_validation("boolq/none")["validation"]["passage"]))
    return data.token_stream(tokenizer, passages, tokens)


def run_setting(source, tokenizer, heldout, ood, s: Setting, args) -> tuple[Row, PruneReport]:
    model = load_pruned(source)
    config = liar.PruneConfig(ratio=s.ratio, criterion=s.criterion, reconstruct=s.reconstruct,
                              allocation=s.allocation, gqa=s.gqa, calibration=s.calibration, alpha=s.alpha,
                              nsamples=args.nsamples, seqlen=args.seqlen)
    start, cpu = time.perf_counter(), time.process_time()
    report = liar.prune(model, None, config, tokenizer=tokenizer)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    result = perplexity(model, heldout, seqlen=args.eval_seqlen)
    ood_ppl = None if ood is None else perplexity(model, ood, seqlen=args.eval_seqlen)["ppl"]
    v = versions()
    return Row(
        setting=f"{s.criterion}/{s.reconstruct}", ratio=s.ratio, criterion=s.criterion, reconstruct=s.reconstruct,
        allocation=s.allocation, gqa=s.gqa, calibration=s.calibration, alpha=str(s.alpha), ppl=result["ppl"],
        ood_ppl=ood_ppl,
        eval_tokens=result["tokens"], prune_seconds=seconds, prune_cpu_seconds=cpu, params_after=report.model["params_after"],
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


def write(rows: list[Row], name: str, dense_ppl: float, dense_ood: float | None, chosen: list[dict]) -> None:
    RESULTS.mkdir(exist_ok=True)
    write_csv(RESULTS / f"{name}.csv", [dataclasses.asdict(r) for r in rows])
    if chosen:
        write_csv(RESULTS / f"{name}_alpha.csv", chosen)
    ood = "" if dense_ood is None else f"; out-of-domain (BoolQ passages): {dense_ood:.2f}"
    lines = [f"Dense SmolLM2-135M held-out perplexity: {dense_ppl:.2f}{ood} (commit {rows[0].commit})", "",
             "| ratio | allocation | calibration | criterion | reconstruct | alpha | ppl | ood ppl | prune wall s "
             "| prune CPU s | blocks removed |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r.ratio:.0%} | {r.allocation} | {r.calibration} | {r.criterion} | {r.reconstruct} | {r.alpha} "
              f"| {r.ppl:.2f} | {'-' if r.ood_ppl is None else f'{r.ood_ppl:.2f}'} | {r.prune_seconds:.0f} "
              f"| {r.prune_cpu_seconds:.0f} | {r.block_fraction_removed:.1%} |" for r in rows]
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
    p.add_argument("--alphas", type=number_or_auto, nargs="+", default=[1e-2])
    p.add_argument("--nsamples", type=int, default=64)
    p.add_argument("--seqlen", type=int, default=512)
    p.add_argument("--eval-seqlen", type=int, default=512)
    p.add_argument("--eval-tokens", type=int, default=16384)
    p.add_argument("--ood-tokens", type=int, default=0, help="also score this many out-of-domain tokens (0: none)")
    p.add_argument("--name", default="smollm2_grid")
    args = p.parse_args()
    torch.manual_seed(0)
    source = resolve_source(None)
    tokenizer = load_tokenizer(source)
    heldout = data.token_stream(tokenizer, data.imdb_texts("heldout"), args.eval_tokens)
    ood = ood_stream(tokenizer, args.ood_tokens) if args.ood_tokens else None
    dense = load_pruned(source)
    dense_ppl = perplexity(dense, heldout, seqlen=args.eval_seqlen)["ppl"]
    dense_ood = None if ood is None else perplexity(dense, ood, seqlen=args.eval_seqlen)["ppl"]
    print(f"dense ppl {dense_ppl:.3f}, out-of-domain {dense_ood}", flush=True)
    rows, chosen = [], []
    for combo in itertools.product(args.ratios, args.criteria, args.modes, args.allocations, args.gqa,
                                   args.calibrations, args.alphas):
        row, report = run_setting(source, tokenizer, heldout, ood, Setting(*combo), args)
        rows.append(row)
        chosen += alpha_rows(row, report)
        print(f"{row.ratio:.0%} {row.allocation} {row.calibration} {row.setting} alpha {row.alpha}: ppl {row.ppl:.2f}"
              f", ood {row.ood_ppl} ({row.prune_seconds:.0f} s)", flush=True)
        write(rows, args.name, dense_ppl, dense_ood, chosen)


if __name__ == "__main__":
    main()
