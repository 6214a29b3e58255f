"""liar.triton_kernels: the Gram kernel under the interpreter on CPU (fp32/fp16), on a GPU when present (bf16 too),
the split-K path (per-split partials), and a compile for sm_90 that needs no GPU."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from liar.triton_kernels import has_triton, interpreting
from tests.test_ops import make_mask, make_x, rel_err

ON_GPU = torch.cuda.is_available()
pytestmark = pytest.mark.skipif(not has_triton() or not (ON_GPU or interpreting()),
                                reason="triton missing, or no GPU and TRITON_INTERPRET unset (tests/conftest.py sets it)")
DEVICE = "cuda" if ON_GPU else "cpu"
# bf16 runs under the interpreter too: the kernel casts 16-bit tiles to fp32 there (triton#4972)
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
TOL = 1e-4 if ON_GPU else 1e-5  # tensor-core fp32 accumulation vs numpy's exact fp32 products


@pytest.fixture(scope="module")
def gram():
    from liar.triton_kernels import gram

    return gram


@pytest.mark.parametrize("split", [1, 3])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("D, T", [(61, 150), (130, 257)])
def test_gram_update_matches_float64(gram, D, T, dtype, split):
    x, mask = make_x(T, D, dtype, DEVICE, 30), make_mask(T, DEVICE, 31)
    G, s = torch.full((D, D), 0.5, device=DEVICE), torch.full((D,), 0.5, device=DEVICE)
    assert gram.gram_update(G, s, x, mask, split=split) == int(mask.sum())
    x64 = x.double().cpu()[mask.cpu()]
    assert rel_err(G, 0.5 + x64.T @ x64, upper=True) < TOL
    assert rel_err(s, 0.5 + x64.sum(0)) < TOL


@pytest.mark.parametrize("split", [1, 2])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_gram_update_cross_matches_float64(gram, dtype, split):
    T, Ds, Dt = 203, 97, 70
    xs, xt, mask = make_x(T, Ds, dtype, DEVICE, 32), make_x(T, Dt, dtype, DEVICE, 33), make_mask(T, DEVICE, 34)
    G_ss, G_ts = torch.zeros(Ds, Ds, device=DEVICE), torch.zeros(Dt, Ds, device=DEVICE)
    s_s, s_t = torch.zeros(Ds, device=DEVICE), torch.zeros(Dt, device=DEVICE)
    gram.gram_update_cross(G_ss, G_ts, s_s, s_t, xs, xt, mask, split=split)
    xs64, xt64 = xs.double().cpu()[mask.cpu()], xt.double().cpu()[mask.cpu()]
    assert rel_err(G_ss, xs64.T @ xs64, upper=True) < TOL
    assert rel_err(G_ts, xt64.T @ xs64) < TOL
    assert rel_err(s_s, xs64.sum(0)) < TOL and rel_err(s_t, xt64.sum(0)) < TOL


def test_float64_is_refused(gram):
    with pytest.raises(TypeError, match="float64"):
        gram.gram_update(torch.zeros(4, 4), torch.zeros(4), torch.ones(3, 4, dtype=torch.float64))


COMPILE_SCRIPT = """
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from liar.triton_kernels import gram
fn = gram._gram_kernel.fn
const = dict(HAS_MASK=True, CAST_FP32=False, INPUT_PRECISION="tf32", BLOCK=128, BLOCK_K=64)
sig = {n: "constexpr" if n in const else ("*fp32" if n.endswith("_ptr") else "i32") for n in fn.arg_names}
sig.update(xs_ptr="*bf16", xt_ptr="*bf16", mask_ptr="*u8")
# What the JIT assumes at a launch with aligned pointers and sizes divisible by 16 (any real layer).
aligned = [n for n in fn.arg_names if n.endswith("_ptr") or n in ("DS", "DT", "stride_s", "stride_t")]
attrs = {(fn.arg_names.index(n),): [["tt.divisibility", 16]] for n in aligned}
src = ASTSource(fn=fn, signature=sig, constexprs={(fn.arg_names.index(k),): v for k, v in const.items()}, attrs=attrs)
kernel = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": 8, "num_stages": 3})
assert "wgmma" in kernel.asm["ptx"], "no Hopper tensor-core instructions in the PTX"
assert "cp.async" in kernel.asm["ptx"], "the token loop is not software-pipelined"
print("ok", kernel.metadata.shared)
"""


def test_compiles_for_hopper_without_a_gpu():
    """The real compiler (not the interpreter) lowers the bf16 kernel to pipelined wgmma for sm_90, on any machine."""
    env = {**os.environ, "TRITON_INTERPRET": "0"}
    done = subprocess.run([sys.executable, "-c", COMPILE_SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "ok" in done.stdout, done.stderr[-3000:]


def test_split_k_is_deterministic_and_equals_one_split(gram):
    """Per-split partials summed in split order: two runs give the same bytes, and the sum matches one split."""
    T, Ds, Dt = 301, 70, 23
    xs, xt, mask = make_x(T, Ds, torch.float16, DEVICE, 35), make_x(T, Dt, torch.float16, DEVICE, 36), \
        make_mask(T, DEVICE, 37)
    runs = []
    for split in (3, 3, 1):
        out = [torch.zeros(Ds, Ds, device=DEVICE), torch.zeros(Dt, Ds, device=DEVICE),
               torch.zeros(Ds, device=DEVICE), torch.zeros(Dt, device=DEVICE)]
        gram.gram_update_cross(*out, xs, xt, mask, split=split)
        runs.append([out[0].triu(), *out[1:]])
    assert all(torch.equal(a, b) for a, b in zip(runs[0], runs[1]))
    assert all(rel_err(a, b) < TOL for a, b in zip(runs[0], runs[2]))
