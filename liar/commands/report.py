"""`liar report DIR`: the run report of a pruned model as one screen of text, and optionally a plot."""

from __future__ import annotations

import argparse
from pathlib import Path

REPORT_NAME = "liar_report.json"  # the name liar.io.export writes (not imported: that module loads torch)


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("report", help="summarize a pruned model's liar_report.json (and plot it)",
                              description="Print what a pruning run did: parameters, units kept per layer, "
                                          "reconstruction errors, damping, time per stage.")
    p.add_argument("path", metavar="DIR", help="a folder written by `liar prune`, or its liar_report.json")
    p.add_argument("--plot", default=None, metavar="FILE.png",
                   help="also draw kept heads/neurons and errors per layer (needs the extra liar[plot])")
    p.add_argument("--json", action="store_true", help="also print the report's model summary as one JSON line")


def run(args: argparse.Namespace) -> dict:
    from liar.report import PruneReport
    from liar.report_text import render

    path = Path(args.path)
    file = path / REPORT_NAME if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"{file} does not exist; pass a folder written by `liar prune` (it holds "
                                f"{REPORT_NAME})")
    report = PruneReport.load(file)
    print(render(report))
    if args.plot:
        from liar.report_plot import plot

        print(f"plot: {plot(report, args.plot)}")
    return report.model
