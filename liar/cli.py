"""`liar` command line: a mirror of `liar.prune` / PruneConfig, plus evaluation.

    liar prune [--model PATH] --out DIR [--ratio R] [--criterion ...] ...   (no --model: embedded SmolLM2-135M)
    liar eval ppl --model DIR [--text FILE] [--seqlen L] [--max-tokens T] [--json]
    liar eval accuracy --model DIR [--data FILE] [--max-length L] [--json]   (sequence classifiers)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shlex
import sys

from liar import config as cfg
from liar import distributed, eval_cli
from liar.config import PruneConfig

CHOICES = {
    "criterion": cfg.CRITERIA, "reconstruct": cfg.RECONSTRUCTIONS, "allocation": cfg.ALLOCATIONS,
    "gqa": cfg.GQA_MODES, "calibration": cfg.CALIBRATION_MODES, "device": cfg.DEVICES, "dtype": cfg.DTYPES,
    "solve_dtype": cfg.SOLVE_DTYPES, "backend": cfg.BACKENDS, "offload": cfg.OFFLOADS,
}
FLAGS = {"intercept": "--no-bias", "overwrite": "--overwrite"}  # booleans: the flag flips the default


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    """One option per PruneConfig field, so the CLI and the API can never drift apart."""
    for f in dataclasses.fields(PruneConfig):
        if f.name in FLAGS:
            parser.add_argument(FLAGS[f.name], dest=f.name, action="store_false" if f.default else "store_true")
            continue
        kind = {float: float, int: int}.get(type(f.default), str)  # None defaults (calib, max_memory) are paths/sizes
        parser.add_argument("--" + f.name.replace("_", "-"), dest=f.name, type=kind, default=f.default,
                            choices=CHOICES.get(f.name), metavar=None if f.name in CHOICES else f.name.upper())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="liar", description="Structured pruning with LIAR reconstruction.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prune", help="prune a model and write the smaller checkpoint")
    p.add_argument("--model", default=None, help="model folder or .gguf file (default: embedded SmolLM2-135M)")
    p.add_argument("--out", required=True, help="output folder (must not exist unless --overwrite)")
    p.add_argument("--json", action="store_true", help="print the report summary as JSON on the last line")
    _add_config_args(p)
    e = sub.add_parser("eval", help="evaluate a model")
    esub = e.add_subparsers(dest="metric", required=True)
    ppl = esub.add_parser("ppl", help="perplexity on a text file (default: held-out IMDB reviews)")
    ppl.add_argument("--model", default=None, help="model folder (default: embedded SmolLM2-135M)")
    ppl.add_argument("--text", default=None, help=".txt/.jsonl/.csv file (default: embedded held-out reviews)")
    ppl.add_argument("--seqlen", type=eval_cli.seqlen_type, default=512, help=eval_cli.SEQLEN_HELP)
    ppl.add_argument("--max-tokens", type=int, default=16384)
    ppl.add_argument("--batch-size", type=int, default=4)
    ppl.add_argument("--device", default="auto", choices=cfg.DEVICES)
    ppl.add_argument("--dtype", default="auto", choices=cfg.DTYPES)
    ppl.add_argument("--json", action="store_true", help="print a JSON object on the last line")
    acc = esub.add_parser("accuracy", help="sequence-classification accuracy on a labelled file")
    acc.add_argument("--model", required=True, help="sequence-classifier folder (e.g. BertForSequenceClassification)")
    acc.add_argument("--data", default=None, help=".jsonl/.csv with `text` and `label` (default: the embedded "
                     "Rotten Tomatoes test split)")
    acc.add_argument("--max-length", type=int, default=128, help="truncate texts to this many tokens")
    acc.add_argument("--batch-size", type=int, default=64)
    acc.add_argument("--device", default="auto", choices=cfg.DEVICES)
    acc.add_argument("--dtype", default="auto", choices=cfg.DTYPES)
    acc.add_argument("--json", action="store_true", help="print a JSON object on the last line")
    eval_cli.add_parser(esub)
    return parser


def _prune(args: argparse.Namespace, argv: list[str]) -> dict:
    from liar.api import prune

    fields = {f.name for f in dataclasses.fields(PruneConfig)}
    config = PruneConfig(**{k: v for k, v in vars(args).items() if k in fields})
    report = prune(args.model, args.out, config, command=shlex.join(["liar", *argv]))
    if distributed.is_main():
        print(report.summary())
    m = report.model
    return {"out": report.output["path"], "report": report.output["report"],
            "stock_loadable": report.output["stock_loadable"], "params_before": m["params_before"],
            "params_after": m["params_after"], "block_fraction_removed": m["block_fraction_removed"],
            "seconds": report.timings["total"]}


def _eval_ppl(args: argparse.Namespace) -> dict:
    import time

    from liar import data
    from liar.devices import resolve_device, resolve_dtype
    from liar.eval import perplexity, resolve_seqlen
    from liar.io.load import load_pruned, load_tokenizer, resolve_source

    started = time.perf_counter()
    source = resolve_source(args.model)
    device = resolve_device(args.device)
    model = load_pruned(source, dtype=resolve_dtype(args.dtype, device), device=device)
    tokenizer = load_tokenizer(source)
    texts = data.read_texts(args.text) if args.text else data.imdb_texts("heldout")
    ids = data.token_stream(tokenizer, texts, args.max_tokens)
    result = perplexity(model, ids, seqlen=resolve_seqlen(args.seqlen, model.config), batch_size=args.batch_size)
    result.update(model=str(source), text=args.text or "embedded IMDB reviews (held-out split)",
                  seconds=time.perf_counter() - started)
    print(f"perplexity {result['ppl']:.3f} over {result['tokens']} tokens ({result['seconds']:.1f} s)")
    return result


def _eval_accuracy(args: argparse.Namespace) -> dict:
    import time

    from liar import data
    from liar.devices import resolve_device, resolve_dtype
    from liar.eval import accuracy, label_ids
    from liar.io.load import load_pruned, load_tokenizer, resolve_source

    started = time.perf_counter()
    source = resolve_source(args.model)
    device = resolve_device(args.device)
    model = load_pruned(source, dtype=resolve_dtype(args.dtype, device), device=device)
    if args.data:
        texts, raw = data.read_labelled(args.data)
        labels = label_ids(raw, model.config)
    else:
        texts, labels = data.rotten_tomatoes("test")
    result = accuracy(model, load_tokenizer(source), texts, labels, args.batch_size, args.max_length)
    result.update(model=str(source), data=args.data or "embedded Rotten Tomatoes sentences (test split)",
                  seconds=time.perf_counter() - started)
    print(f"accuracy {result['accuracy']:.4f} ({result['correct']}/{result['n']}, {result['seconds']:.1f} s)")
    return result


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    succeeded = False
    try:
        if args.command == "prune":
            result = _prune(args, argv)
        elif args.metric in eval_cli.COMMANDS:
            result = eval_cli.run(args)
        else:
            result = _eval_ppl(args) if args.metric == "ppl" else _eval_accuracy(args)
        speaks = distributed.is_main()  # read before the process group is torn down
        succeeded = True
    except (ValueError, FileNotFoundError, FileExistsError, FloatingPointError, OSError, RuntimeError) as err:
        print(f"liar: error: {err}", file=sys.stderr)
        return 2
    finally:
        distributed.shutdown(succeeded)
    if args.json and speaks:
        print(json.dumps(result))
    return 0
