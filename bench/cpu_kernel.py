"""CPU Gram kernel per instruction set vs the torch reference, as ratios measured in one run, and against the
cores' peak.

    python -m bench.cpu_kernel                         # D ∈ {576, 1536, 4096}, 16384 tokens, bf16 and fp32
    python -m bench.cpu_kernel --dims 1536 --dtypes bfloat16 --repeats 7 --ops gram_update gram_update_cross
    python -m bench.cpu_kernel --cpu-time --dims 576 1536   # one thread, its CPU time: rates against one core

Each (op, dtype, D) times the torch reference and liar._C under every supported ISA (`set_cpu_isa`: amx,
avx512 by default; for fp32 inputs "amx" runs the avx512 kernel, so only the ISAs that differ are timed), one call
of each in turn per repeat after a warm-up round, so that the machine's load drifts over all of them alike;
the medians are compared. This machine's 2 cores are shared with other work (load averages of 2–20 while
these numbers were taken), so only the ratios mean much.

Useful FLOPs: the upper triangle with its diagonal, D(D+1)/2 multiply-adds per token, 2 FLOPs each:
T·D·(D+1); the cross-Gram adds 2·D_t·D_s·T. The reference computes the full square (2·T·D² FLOPs), so its
useful rate is about half its raw one.

Peak per core = clock × FLOPs per cycle of the ISA's multiply unit: the clock is /proc/cpuinfo's `cpu MHz`
(the nominal frequency a VM sees; turbo can exceed it), fp32 AVX-512 FMA: 2 units × 16 lanes × 2 = 64
FLOPs/cycle (Xeon cores with two 512-bit FMA units), AMX-BF16: one 16×16×32 TDPBF16PS (8192 multiply-adds)
per 16 cycles = 1024 FLOPs/cycle; × the threads torch uses.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from bench.bench_gram import useful_flops
from bench.common import metadata, table, write_results
from liar import _ext
from liar.ops import reference

DIMS = (576, 1536, 4096)
DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}
FLOPS_PER_CYCLE = {"amx": 1024, "avx512": 64, "avx2": 32, "generic": 8}


@dataclass(frozen=True)
class Row:
    op: str
    dtype: str
    D: int
    tokens: int
    kernel: str  # "torch" or "cpp/<isa>"
    median_ms: float
    speedup: float  # torch median / this median, same run
    gflops: float  # useful GFLOP/s
    peak_gflops: float
    peak_pct: float


def cpu_mhz() -> float:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("cpu MHz"):
            return float(line.split(":", 1)[1])
    raise RuntimeError("/proc/cpuinfo has no `cpu MHz` line: pass --mhz")


def supported_isas(wanted: list[str]) -> list[str]:
    current, found = _ext.ext.cpu_isa(), []
    for name in wanted:
        try:
            _ext.ext.set_cpu_isa(name)
            found.append(name)
        except RuntimeError:
            pass
    _ext.ext.set_cpu_isa(current)
    return found


def peak_isa(kernel: str, dtype: str) -> str:
    """The multiply unit a kernel runs on: the torch reference upcasts to fp32 and runs MKL's AVX-512 sgemm."""
    isa = kernel.split("/", 1)[1] if "/" in kernel else "avx512"
    return "avx512" if isa == "amx" and dtype != "bfloat16" else isa


def inputs(op: str, D: int, tokens: int, dtype: torch.dtype) -> tuple:
    gen = torch.Generator().manual_seed(D + tokens)
    x = (torch.randn(tokens, D, generator=gen) + 0.5).to(dtype)
    if op == "gram_update":
        return torch.zeros(D, D), torch.zeros(D), x, None
    xt = (torch.randn(tokens, D, generator=gen) - 0.5).to(dtype)
    return torch.zeros(D, D), torch.zeros(D, D), torch.zeros(D), torch.zeros(D), x, xt, None


def callables(op: str, dtype: str, isas: list[str]) -> dict:
    ext_fn = getattr(_ext.ext, f"{op}_cpu")
    kernels = {"torch": getattr(reference, op)}
    for isa in isas if dtype == "bfloat16" else [i for i in isas if i != "amx"]:
        kernels[f"cpp/{isa}"] = (lambda name: lambda *a: (_ext.ext.set_cpu_isa(name), ext_fn(*a)))(isa)
    return kernels


def time_round_robin(kernels: dict, args: tuple, repeats: int, clock=time.perf_counter) -> dict[str, float]:
    """Median seconds per kernel; each repeat calls every kernel once, after one warm-up round."""
    times = {name: [] for name in kernels}
    for rep in range(repeats + 1):
        for name, fn in kernels.items():
            start = clock()
            fn(*args)
            if rep > 0:
                times[name].append(clock() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dims", type=int, nargs="+", default=list(DIMS))
    parser.add_argument("--tokens", type=int, default=16384)
    parser.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=list(DTYPES))
    parser.add_argument("--ops", nargs="+", default=["gram_update"], choices=["gram_update", "gram_update_cross"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--isas", nargs="+", default=["amx", "avx512"], choices=list(FLOPS_PER_CYCLE),
                        help="liar._C kernels to time (those this CPU/build lacks are left out)")
    parser.add_argument("--cpu-time", action="store_true",
                        help="one thread, timed by its CPU time (time.thread_time): the core's own rate, "
                             "robust to other processes taking the core (not to their use of the caches)")
    parser.add_argument("--mhz", type=float, default=None, help="clock for the peak (default: /proc/cpuinfo)")
    args = parser.parse_args(argv)
    if not _ext.HAS_EXT:
        sys.exit(f"liar._C is not loaded ({_ext.EXT_ERROR}): build it with pip install --no-build-isolation -e .")
    if args.cpu_time:
        torch.set_num_threads(1)  # at::parallel_for and MKL then run in the calling thread, which thread_time sees
    clock = time.thread_time if args.cpu_time else time.perf_counter
    default_isa, isas, mhz = _ext.ext.cpu_isa(), supported_isas(args.isas), args.mhz or cpu_mhz()
    threads = torch.get_num_threads()
    meta = {**metadata("cpu"), "cpu_isas": " ".join(isas), "cpu_mhz": f"{mhz:.0f}", "threads": str(threads),
            "clock": "thread CPU time" if args.cpu_time else "wall"}
    print(f"# {meta['device_name']}  {mhz:.0f} MHz  ISAs {isas}  torch {meta['torch']}  liar @ {meta['commit']}")
    rows = []
    try:
        for op in args.ops:
            for dtype in args.dtypes:
                for D in args.dims:
                    kernels = callables(op, dtype, isas)
                    medians = time_round_robin(kernels, inputs(op, D, args.tokens, DTYPES[dtype]), args.repeats,
                                               clock)
                    flops = useful_flops(op, D, args.tokens)
                    for name, sec in medians.items():
                        peak = mhz * 1e6 * FLOPS_PER_CYCLE[peak_isa(name, dtype)] * threads / 1e9
                        rows.append(Row(op, dtype, D, args.tokens, name, sec * 1e3, medians["torch"] / sec,
                                        flops / sec / 1e9, peak, 100 * flops / sec / 1e9 / peak))
                        print(f"# {op} {dtype} D={D} {name}: {sec * 1e3:.1f} ms", file=sys.stderr, flush=True)
    finally:
        _ext.ext.set_cpu_isa(default_isa)
    columns = [("op", ""), ("dtype", ""), ("D", ""), ("tokens", ""), ("kernel", ""), ("median_ms", ".1f"),
               ("speedup", ".2f"), ("gflops", ".1f"), ("peak_gflops", ".0f"), ("peak_pct", ".1f")]
    print(table([r.__dict__ for r in rows], columns))
    csv_path, _ = write_results("cpu_kernel", rows, meta)
    print(f"# results: {csv_path}")


if __name__ == "__main__":
    main()
