"""`liar eval zeroshot` and `liar eval compare` (lm-evaluation-harness on offline data), and the --seqlen
presets they share with `liar eval ppl`."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from liar import config as cfg

COMMANDS = ("zeroshot", "compare")


def seqlen_type(text: str) -> str | int:
    """--seqlen: an integer (checked where it is used) or a paper's preset name."""
    from liar.eval import SEQLEN_PRESETS

    if text in SEQLEN_PRESETS:
        return text
    if text.lstrip("-").isdigit():  # out-of-range lengths get liar's own error, which names the fix
        return int(text)
    raise argparse.ArgumentTypeError(f"takes a positive integer or one of {', '.join(SEQLEN_PRESETS)}; got {text!r}")


SEQLEN_HELP = ("tokens per window, or a paper's convention: llm-pruner / flap = 128, slicegpt = 2048 (capped by the "
               "model's max positions); every token after the first of each window is scored")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tasks", default=None, help="comma-separated subset of boolq,piqa,hellaswag,winogrande,arc_easy,"
                   "arc_challenge,openbookqa (default: all seven)")
    p.add_argument("--limit", type=int, default=None, help="score only the first N questions of each task "
                   "(default: the whole validation split)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="auto", choices=cfg.DEVICES)
    p.add_argument("--dtype", default="auto", choices=cfg.DTYPES)
    p.add_argument("--json", action="store_true", help="print a JSON object on the last line")


def add_parser(subparsers) -> None:
    z = subparsers.add_parser("zeroshot", help="zero-shot accuracy on the seven pruning-paper tasks (lm-eval, offline)")
    z.add_argument("--model", default=None, help="model folder, stock or liar_pruned (default: embedded SmolLM2-135M)")
    _common(z)
    c = subparsers.add_parser("compare", help="dense vs pruned: perplexity + zero-shot, retention, table and plot")
    c.add_argument("--dense", default=None, help="the dense model folder (default: embedded SmolLM2-135M)")
    c.add_argument("--pruned", nargs="*", default=[], help="pruned model folders")
    c.add_argument("--out", required=True, help="output prefix: writes PREFIX.md, .csv, .png and .json, and caches "
                   "each model's numbers in PREFIX.runs/ (a rerun resumes; runs sharing --out share the cache)")
    c.add_argument("--seqlen", type=seqlen_type, default="llm-pruner", help=SEQLEN_HELP + " (default: llm-pruner)")
    c.add_argument("--max-tokens", type=int, default=16384, help="perplexity text budget in tokens")
    _common(c)


def run(args: argparse.Namespace) -> dict:
    return _zeroshot(args) if args.metric == "zeroshot" else _compare(args)


def _zeroshot(args: argparse.Namespace) -> dict:
    from liar import zeroshot

    started = time.perf_counter()
    tasks = zeroshot.parse_tasks(args.tasks)
    zeroshot.check_data()
    from liar.devices import resolve_device, resolve_dtype
    from liar.io.load import load_pruned, load_tokenizer, resolve_source

    source = resolve_source(args.model)
    device = resolve_device(args.device)
    model = load_pruned(source, dtype=resolve_dtype(args.dtype, device), device=device)
    result = zeroshot.evaluate(model, load_tokenizer(source), tasks, args.limit, args.batch_size)
    result.update(model=str(source), seconds=time.perf_counter() - started)
    for task, row in result["tasks"].items():
        stderr = row[row["metric"] + "_stderr"]
        print(f"{task:14s} {row['metric']:8s} {row['score']:.4f} ± {stderr:.4f}  "
              f"(n={row['n']}, {row['seconds']:.0f} s)")
    print(f"mean {result['mean']:.4f} over {len(tasks)} tasks ({result['seconds']:.0f} s)")
    return result


def _compare(args: argparse.Namespace) -> dict:
    from liar import compare, zeroshot
    from liar.io.load import resolve_source

    settings = {"tasks": zeroshot.parse_tasks(args.tasks), "limit": args.limit, "batch_size": args.batch_size,
                "seqlen": args.seqlen, "max_tokens": args.max_tokens, "device": args.device, "dtype": args.dtype}
    pruned = [resolve_source(p) for p in args.pruned]
    result = compare.run(resolve_source(args.dense), pruned, Path(args.out), settings)
    print(Path(result["files"]["md"]).read_text(encoding="utf-8"))
    return result
