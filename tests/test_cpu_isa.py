"""Every CPU micro-kernel forced in turn (set_cpu_isa), against float64 sums: gram and cross-gram, masked and
unmasked, onto non-zero accumulators, at sizes that leave every tile, block, token pair and chunk partial.
"amx" runs bf16 inputs on AMX-BF16 tiles (csrc/cpu/gram_amx.cpp) where the CPU and the OS allow it."""

from __future__ import annotations

import os

import pytest
import torch

from liar import _ext
from tests.test_ext import isa, needs_ext, supported_isas  # noqa: F401  (isa: the fixture restoring the ISA)
from tests.test_ops import accumulators, make_mask, make_x, rel_err

# D = 203: 6 full 32-channel AMX blocks + 11; T = 333: one 256-token chunk, 77 more (two full 32-token steps +
# 13, an odd count, so the last token pair is half padding); D_t = 29 < one block. 577 × 300 splits into
# several tile jobs per thread. Tolerance: fp32 accumulation of exact products over ≤ 333 tokens measured
# ≤ 1e-7 relative (Frobenius) here; 1e-5 leaves room for another summation order, not for a wrong term.
SIZES = [(203, 333, 29), (577, 300, 64)]
TOL = 1e-5


def reference(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    x = x.double()
    return x if mask is None else x[mask]


@needs_ext
@pytest.mark.parametrize("name", supported_isas() or ["generic"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=str)
@pytest.mark.parametrize("masked", [False, True], ids=["unmasked", "masked"])
@pytest.mark.parametrize("D, T, Dt", SIZES)
def test_gram_and_cross_gram_match_float64(isa, name, dtype, masked, D, T, Dt):  # noqa: F811
    isa(name)
    x, xt = make_x(T, D, dtype, "cpu", 30), make_x(T, Dt, dtype, "cpu", 31)
    mask = make_mask(T, "cpu", 32) if masked else None
    xs64, xt64 = reference(x, mask), reference(xt, mask)

    G, s = accumulators(D, "cpu", seed=33)
    G0, s0 = G.double(), s.double()
    assert _ext.ext.gram_update_cpu(G, s, x, mask) == xs64.shape[0]
    assert rel_err(G, G0 + xs64.T @ xs64, upper=True) < TOL
    assert rel_err(s, s0 + xs64.sum(0)) < TOL

    G, s = accumulators(D, "cpu", seed=34)
    G_ts, s_t = accumulators(max(D, Dt), "cpu", seed=35)
    G_ts, s_t = G_ts[:Dt, :D].contiguous(), s_t[:Dt].contiguous()
    G0, s0, Gts0, st0 = G.double(), s.double(), G_ts.double(), s_t.double()
    assert _ext.ext.gram_update_cross_cpu(G, G_ts, s, s_t, x, xt, mask) == xs64.shape[0]
    assert rel_err(G, G0 + xs64.T @ xs64, upper=True) < TOL
    assert rel_err(G_ts, Gts0 + xt64.T @ xs64) < TOL
    assert rel_err(s, s0 + xs64.sum(0)) < TOL and rel_err(s_t, st0 + xt64.sum(0)) < TOL


@needs_ext
def test_amx_is_the_default_where_the_cpu_has_it():
    """A CPU that lists amx_bf16 (and lets the process use the tiles) gets AMX for bf16 unless overridden."""
    flags = next((line for line in open("/proc/cpuinfo") if line.startswith("flags")), "").split()
    if "amx_bf16" not in flags:
        pytest.skip("this CPU has no AMX-BF16")
    assert "amx" in supported_isas()
    assert _ext.ext.cpu_isa() == "amx" or os.environ.get("LIAR_CPU_ISA")
