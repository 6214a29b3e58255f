"""pytest-benchmark view of the Gram kernels (the table script is bench/bench_gram.py).

    pytest bench/test_gram_benchmark.py --benchmark-only                    # CPU, D = 1536, 16384 bf16 tokens
    pytest bench/test_gram_benchmark.py --benchmark-only --benchmark-json=bench/results/pytest_gram.json
"""

from __future__ import annotations

import pytest
import torch

from bench.bench_gram import ExperimentConfig, _inputs, backends_for, useful_flops
from liar.ops.backends import BACKENDS

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
CASES = [ExperimentConfig(op, backend, 1536, 16384, "bfloat16", DEVICE)
         for op in ("gram_update", "gram_update_cross") for backend in backends_for(DEVICE, op)]


@pytest.mark.parametrize("cfg", CASES, ids=lambda c: f"{c.op}-{c.backend}-D{c.D}-T{c.tokens}-{c.dtype}")
def test_gram_kernel(benchmark, cfg):
    kernel = BACKENDS[cfg.backend].kernels[cfg.op]
    args = _inputs(cfg)

    def call():
        kernel(*args)
        if DEVICE == "cuda":
            torch.cuda.synchronize()

    benchmark.extra_info.update(useful_gflop=useful_flops(cfg.op, cfg.D, cfg.tokens) / 1e9, device=DEVICE)
    benchmark.pedantic(call, warmup_rounds=1, rounds=5, iterations=1)
