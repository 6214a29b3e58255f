"""End-to-end pruning time per kernel backend: the CLI on the embedded SmolLM2-135M, same settings, alternating.

    python -m bench.bench_prune                                  # torch vs cpp, 32 × 256 tokens, 2 runs each
    python -m bench.bench_prune --backends torch cpp --repeats 3 --nsamples 32 --seqlen 256

Each run is `liar prune --out <tmp> --nsamples N --seqlen L --backend B --overwrite` (liar.cli.main in a fresh
process whose kernel calls are timed); the time is the report's `timings.prune` (the layer loop, loading
excluded), and `kernels_s` the part of it spent inside the Gram and solve kernels. Runs alternate between
backends so that load from other processes on a shared machine hits both alike; the table gives medians.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
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
    gram_s: float
    solve_s: float


def child(argv: list[str]) -> None:
    """In the child process: time every kernel call, run the CLI, print the totals as the last line."""
    from liar import cli
    from liar.ops.backends import BACKENDS

    totals: dict[str, float] = {}

    def timed(op, fn):
        def call(*args):
            start = time.perf_counter()
            try:
                return fn(*args)
            finally:
                totals[op] = totals.get(op, 0.0) + time.perf_counter() - start
        return call

    for backend in BACKENDS.values():
        backend.kernels = {op: timed(op, fn) for op, fn in backend.kernels.items()}
    from liar.ops import solve  # liar_solve is the pure-torch solve on every backend

    solve.liar_solve = timed("liar_solve", solve.liar_solve)
    code = cli.main(argv)
    print(json.dumps(totals))
    sys.exit(code)


def prune_once(backend: str, nsamples: int, seqlen: int, out: Path) -> tuple[float, str, dict[str, float]]:
    argv = ["prune", "--out", str(out), "--nsamples", str(nsamples), "--seqlen", str(seqlen), "--backend", backend,
            "--overwrite"]
    done = subprocess.run([sys.executable, "-m", "bench.bench_prune", "--child", *argv], capture_output=True,
                          text=True, cwd=Path(__file__).resolve().parents[1])
    if done.returncode != 0:
        raise RuntimeError(f"liar {' '.join(argv)} failed:\n{done.stderr[-3000:]}")
    report = json.loads((out / "liar_report.json").read_text())
    kernels = json.loads(done.stdout.strip().splitlines()[-1])
    return float(report["timings"]["prune"]), report["backends"]["gram_update"], kernels


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        return child(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", nargs="+", default=["torch", "cpp"])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--nsamples", type=int, default=32)
    parser.add_argument("--seqlen", type=int, default=256)
    args = parser.parse_args(argv)
    times: dict[str, list[float]] = {b: [] for b in args.backends}
    kernels: dict[str, list[dict[str, float]]] = {b: [] for b in args.backends}
    served: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeats):
            for backend in args.backends:
                seconds, served[backend], spent = prune_once(backend, args.nsamples, args.seqlen, Path(tmp) / backend)
                times[backend].append(seconds)
                kernels[backend].append(spent)
                print(f"# run {rep + 1} {backend}: {seconds:.1f} s, kernels {spent}", file=sys.stderr, flush=True)
    base = statistics.median(times[args.backends[0]])
    results = [PruneResult(b, args.nsamples, args.seqlen, len(t), statistics.median(t), min(t),
                           base / statistics.median(t), served[b], _median(kernels[b], "gram_update"),
                           _median(kernels[b], "liar_solve")) for b, t in times.items()]
    meta = metadata("cpu")
    print(f"# SmolLM2-135M prune, {meta['device_name']}, liar @ {meta['commit']}")
    print(table([vars(r) for r in results], [("backend", ""), ("gram_backend", ""), ("nsamples", ""),
                                             ("seqlen", ""), ("runs", ""), ("median_s", ".1f"), ("min_s", ".1f"),
                                             ("speedup", ".2f"), ("gram_s", ".2f"), ("solve_s", ".2f")]))
    csv_path, _ = write_results("prune", results, meta)
    print(f"# results: {csv_path}")


def _median(runs: list[dict[str, float]], op: str) -> float:
    return statistics.median(r.get(op, 0.0) for r in runs)


if __name__ == "__main__":
    main()
