"""Gram-accumulation kernels: each op × each available backend vs the torch reference, one table.

    python -m bench.bench_gram                  # CPU: D ∈ {576, 1536, 4096}, tokens ∈ {4096, 16384}, bf16
    python -m bench.bench_gram --device cuda    # adds D ∈ {11008, 28672}
    python -m bench.bench_gram --dims 1536 --tokens 16384 --dtypes bfloat16 float32 --ops gram_update

GFLOP/s count the useful work only: one triangle of the Gram, D(D+1)/2 · 2 · T, plus 2 · D_t · D_s · T for the
cross-Gram; the reference computes the full square and so shows half its raw rate. The speedup column is
the reference's median time over the backend's, measured in the same run.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from dataclasses import dataclass

import torch

from bench.common import median_seconds, metadata, table, write_results
from liar.ops.backends import BACKENDS

CPU_DIMS = (576, 1536, 4096)
GPU_DIMS = CPU_DIMS + (11008, 28672)
TOKENS = (4096, 16384)
OPS = ("gram_update", "gram_update_cross")
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


@dataclass(frozen=True)
class ExperimentConfig:
    op: str
    backend: str
    D: int
    tokens: int
    dtype: str
    device: str


@dataclass(frozen=True)
class ExperimentResult:
    config: ExperimentConfig
    median_ms: float
    gflops: float
    speedup: float


def useful_flops(op: str, D: int, tokens: int) -> float:
    triangle = D * (D + 1) * tokens
    return triangle + (2 * D * D * tokens if op == "gram_update_cross" else 0)


def backends_for(device: str, op: str) -> list[str]:
    return [n for n, b in BACKENDS.items() if b.available and device in b.devices and op in b.kernels
            and not (n == "triton" and device == "cpu")]  # the interpreter is a test tool, not a kernel


def get_configs(device: str, dims, tokens, dtypes, ops) -> list[ExperimentConfig]:
    return [ExperimentConfig(op, backend, D, T, dtype, device)
            for op, D, T, dtype in itertools.product(ops, dims, tokens, dtypes)
            for backend in backends_for(device, op)]


def _inputs(cfg: ExperimentConfig) -> tuple:
    """Accumulators and activations (random, never zeros) on the device; the student and teacher share D."""
    gen = torch.Generator().manual_seed(cfg.D + cfg.tokens)
    x = (torch.randn(cfg.tokens, cfg.D, generator=gen) + 0.5).to(cfg.device, DTYPES[cfg.dtype])
    G, s = torch.zeros(cfg.D, cfg.D, device=cfg.device), torch.zeros(cfg.D, device=cfg.device)
    if cfg.op == "gram_update":
        return G, s, x, None
    xt = (torch.randn(cfg.tokens, cfg.D, generator=gen) - 0.5).to(cfg.device, DTYPES[cfg.dtype])
    return G, torch.zeros_like(G), s, torch.zeros_like(s), x, xt, None


def run_experiment(cfg: ExperimentConfig) -> float:
    """Median seconds of one call of the backend's kernel."""
    kernel = BACKENDS[cfg.backend].kernels[cfg.op]
    args = _inputs(cfg)
    seconds = median_seconds(lambda: kernel(*args), cfg.device)
    del args
    if cfg.device == "cuda":
        torch.cuda.empty_cache()
    return seconds


def run_all(configs: list[ExperimentConfig]) -> list[ExperimentResult]:
    """Each config timed once; the speedup divides by the torch time of the same op, D, tokens and dtype."""
    seconds = {}
    for cfg in configs:
        seconds[cfg] = run_experiment(cfg)
        print(f"# {cfg.op} {cfg.backend} {cfg.dtype} D={cfg.D} T={cfg.tokens}: {seconds[cfg] * 1e3:.1f} ms",
              file=sys.stderr, flush=True)
    results = []
    for cfg, t in seconds.items():
        ref = seconds.get(ExperimentConfig(cfg.op, "torch", cfg.D, cfg.tokens, cfg.dtype, cfg.device))
        results.append(ExperimentResult(cfg, t * 1e3, useful_flops(cfg.op, cfg.D, cfg.tokens) / t / 1e9,
                                        ref / t if ref else float("nan")))
    return results


COLUMNS = [("op", ""), ("backend", ""), ("dtype", ""), ("D", ""), ("tokens", ""), ("median_ms", ".1f"),
           ("gflops", ".1f"), ("speedup", ".2f")]


def print_table(results: list[ExperimentResult]) -> str:
    rows = [{**cfg_dict(r.config), "median_ms": r.median_ms, "gflops": r.gflops, "speedup": r.speedup}
            for r in results]
    text = table(rows, COLUMNS)
    print(text)
    return text


def cfg_dict(cfg: ExperimentConfig) -> dict:
    return {"op": cfg.op, "backend": cfg.backend, "dtype": cfg.dtype, "D": cfg.D, "tokens": cfg.tokens}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--dims", type=int, nargs="+")
    parser.add_argument("--tokens", type=int, nargs="+", default=list(TOKENS))
    parser.add_argument("--dtypes", nargs="+", default=["bfloat16"], choices=list(DTYPES))
    parser.add_argument("--ops", nargs="+", default=list(OPS), choices=list(OPS))
    args = parser.parse_args(argv)
    dims = args.dims or (GPU_DIMS if args.device == "cuda" else CPU_DIMS)
    meta = metadata(args.device)
    print(f"# {meta['device_name']}  torch {meta['torch']}  liar {meta['liar']} @ {meta['commit']}")
    results = run_all(get_configs(args.device, dims, args.tokens, args.dtypes, args.ops))
    print_table(results)
    csv_path, _ = write_results("gram", results, meta)
    print(f"# results: {csv_path}")


if __name__ == "__main__":
    main()
