"""`liar` command line: a mirror of `liar.prune` / PruneConfig, plus evaluation and reports.

    liar prune [--model PATH] --out DIR [--ratio R] [--dry-run] ...   (no --model: embedded SmolLM2-135M)
    liar report DIR [--plot FILE.png]
    liar eval ppl --model DIR [--text FILE] [--json]
    liar eval accuracy --model DIR [--data FILE] [--json]   (sequence classifiers)
    liar eval zeroshot --model DIR [--tasks T,...] [--limit N] [--json]   (lm-evaluation-harness, offline)
    liar eval compare --dense DIR --pruned DIR [DIR ...] --out PREFIX [--json]
    liar eval speed --model DIR [--model DIR ...] [--batch B] [--prompt-len P] [--gen-len T] [--json]

Each sub-command is a module in liar.commands exposing `add_parser(subparsers)` and `run(args) -> dict | None`.
Only argparse runs before the arguments are checked: a module imports torch inside `run`, so `--help`,
`--version` and typos answer in a fraction of a second (bench/cli_startup.py). A new command is one line below.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys

COMMANDS = ("liar.commands.prune", "liar.commands.report")
EVAL_COMMANDS = ("liar.commands.eval_ppl", "liar.commands.eval_accuracy", "liar.commands.eval_speed",
                 "liar.commands.eval_zeroshot")
# Errors a user can fix (bad paths, bad values, a full disk, a diverged solve): one line, exit code 2.
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, FloatingPointError, OSError, RuntimeError)


def _version() -> str:
    from importlib import metadata

    from liar import __version__

    found = []
    for package in ("torch", "transformers"):
        try:
            found.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            found.append(f"{package} missing")
    return f"liar {__version__} ({', '.join(found)}, python {sys.version.split()[0]})"


class _VersionAction(argparse.Action):
    """--version, with the versions looked up only when asked (reading package metadata made every parse
    slower: building the parser took 97 ms with it, 54 ms without)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest, nargs=0, default=default,
                         help="print the versions of liar, torch, transformers and python, then exit")

    def __call__(self, parser, namespace, values, option_string=None):
        print(_version())
        parser.exit()


def _register(subparsers, modules: tuple[str, ...]) -> None:
    """Let each module add its parser(s); every parser it adds runs that module's `run`."""
    for name in modules:
        module = importlib.import_module(name)
        before = set(subparsers.choices)
        module.add_parser(subparsers)
        for command in set(subparsers.choices) - before:
            subparsers.choices[command].set_defaults(run=module.run)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="liar", description="Structured pruning of transformer language models "
                                     "with LIAR reconstruction (arXiv 2407.13331).")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action=_VersionAction)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _register(sub, COMMANDS)
    evaluate = sub.add_parser("eval", help="evaluate a model (perplexity, accuracy, ...)",
                              description="Evaluate a model.")
    _register(evaluate.add_subparsers(dest="metric", required=True, metavar="METRIC"), EVAL_COMMANDS)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    args.argv = argv
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        result = args.run(args)
    except BrokenPipeError:  # the reader stopped early (`liar report DIR | head`): not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except USER_ERRORS as err:
        print(f"liar: error: {err}", file=sys.stderr)
        return 2
    if getattr(args, "json", False) and result is not None:
        print(json.dumps(result))
    return 0
