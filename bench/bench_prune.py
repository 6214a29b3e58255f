"""End-to-end pruning time per kernel backend: the CLI on the embedded SmolLM2-135M, same settings, alternating.

    python -m bench.bench_prune                                  # torch vs cpp, 32 × 256 tokens, 2 runs each
    python -m bench.bench_prune --backends torch cpp --repeats 3 --nsamples 32 --seqlen 256

Each run is `python -m liar prune --out <tmp> --nsamples N --seqlen L --backend B --overwrite`; the time is the
report's `timings.prune` (the layer loop, loading excluded). Runs alternate between backends so that load
from other processes on a shared machine hits both alike; the table gives each backend's median.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench.common import metadata, table, write_results


@dataclass(frozen=True)
class PruneResult:
    backend: str
    nsamples: int
    seqlen: int
    runs: int
    median_s: float
    min_s: float
    speedup: float
    gram_backend: str


def prune_once(backend: str, nsamples: int, seqlen: int, out: Path) -> tuple[float, str]:
    cmd = [sys.executable, "-m", "liar", "prune", "--out", str(out), "--nsamples", str(nsamples), "--seqlen",
           str(seqlen), "--backend", backend, "--overwrite"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    report = json.loads((out / "liar_report.json").read_text())
    return float(report["timings"]["prune"]), report["backends"]["gram_update"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", nargs="+", default=["torch", "cpp"])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--nsamples", type=int, default=32)
    parser.add_argument("--seqlen", type=int, default=256)
    args = parser.parse_args(argv)
    times: dict[str, list[float]] = {b: [] for b in args.backends}
    served: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeats):
            for backend in args.backends:
                seconds, served[backend] = prune_once(backend, args.nsamples, args.seqlen, Path(tmp) / backend)
                times[backend].append(seconds)
                print(f"# run {rep + 1} {backend}: {seconds:.1f} s", file=sys.stderr, flush=True)
    base = statistics.median(times[args.backends[0]])
    results = [PruneResult(b, args.nsamples, args.seqlen, len(t), statistics.median(t), min(t),
                           base / statistics.median(t), served[b]) for b, t in times.items()]
    meta = metadata("cpu")
    print(f"# SmolLM2-135M prune, {meta['device_name']}, liar @ {meta['commit']}")
    print(table([vars(r) for r in results], [("backend", ""), ("gram_backend", ""), ("nsamples", ""),
                                             ("seqlen", ""), ("runs", ""), ("median_s", ".1f"), ("min_s", ".1f"),
                                             ("speedup", ".2f")]))
    csv_path, _ = write_results("prune", results, meta)
    print(f"# results: {csv_path}")


if __name__ == "__main__":
    main()
