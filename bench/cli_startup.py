"""How fast the `liar` command answers when it has nothing heavy to do: help, version, a typo.

    .venv/bin/python bench/cli_startup.py [--label after] [--reps 5]

Runs each command `reps` times as a fresh process (the installed `liar` entry point beside this Python) and
prints the median wall time; appends a row per command to bench/results/cli_startup.csv. Wall times depend
on how busy the machine is: compare labels measured back to back.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
COMMANDS = {
    "liar --help": ["--help"],
    "liar prune --help": ["prune", "--help"],
    "liar --version": ["--version"],
    "liar prune --ratio two (argument error)": ["prune", "--out", "x", "--ratio", "two"],
}


def median_wall(argv: list[str], reps: int) -> tuple[float, int]:
    times, code = [], 0
    for _ in range(reps):
        start = time.perf_counter()
        code = subprocess.run(argv, capture_output=True).returncode
        times.append(time.perf_counter() - start)
    return statistics.median(times), code


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", default="current", help="name of this measurement (default: current)")
    parser.add_argument("--reps", type=int, default=5, help="fresh processes per command (default: 5)")
    args = parser.parse_args()
    liar = Path(sys.executable).with_name("liar")
    rows = []
    for name, argv in COMMANDS.items():
        seconds, code = median_wall([str(liar), *argv], args.reps)
        rows.append({"label": args.label, "command": name, "median_s": round(seconds, 3), "exit_code": code,
                     "reps": args.reps})
        print(f"{args.label:>8}  {name:<40} {seconds:6.3f} s  (exit {code})")
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "cli_startup.csv"
    new = not path.exists()
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        if new:
            writer.writeheader()
        writer.writerows(rows)


if __name__ == "__main__":
    main()
