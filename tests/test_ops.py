"""liar.ops: every available backend against a float64 reference, streaming, opcheck, dispatch and bad inputs.

Tolerances are relative Frobenius errors against float64 sums of the same (already rounded) inputs, so they
measure only the fp32 accumulation: 16-bit products are exact in fp32, and fp32 products round once.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from torch.library import opcheck

import liar.ops as ops
from liar.ops.backends import BACKENDS

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# fp32 accumulation of ~1000 products: ~1e-7 observed; tensor cores on GPU accumulate in fp32 too, but in a
# different order and with their own rounding of partial sums, so they get a looser bound.
TOL = {"cpu": 1e-5, "cuda": 1e-4}


def backends_for(device: str) -> list[str]:
    return [name for name, b in BACKENDS.items() if b.available and device in b.devices]


CASES = [(d, b) for d in DEVICES for b in backends_for(d)]


def shape_for(backend: str, device: str) -> tuple[int, int]:
    """D = 577, 1000 tokens; the Triton interpreter (numpy per program step) gets a smaller odd shape."""
    return (133, 301) if (backend == "triton" and device == "cpu") else (577, 1000)


def make_x(tokens: int, dim: int, dtype: torch.dtype, device: str, seed: int) -> torch.Tensor:
    """Activations with a mean, uneven channel scales and no zeros (zeros hide unwritten outputs)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(tokens, dim, generator=g) * (torch.rand(dim, generator=g) * 3 + 0.1)
    x += torch.randn(dim, generator=g)
    x[x == 0] = 0.5
    return x.to(device=device, dtype=dtype)


def make_mask(tokens: int, device: str, seed: int) -> torch.Tensor:
    mask = torch.rand(tokens, generator=torch.Generator().manual_seed(seed)) > 0.3
    return mask.to(device)


def rel_err(got: torch.Tensor, want: torch.Tensor, upper: bool = False) -> float:
    got, want = got.double().cpu(), want.double().cpu()
    if upper:
        keep = torch.ones_like(want, dtype=torch.bool).triu()
        got, want = got[keep], want[keep]
    return float((got - want).norm() / want.norm())


def accumulators(D: int, device: str, seed: int = 7) -> tuple[torch.Tensor, torch.Tensor]:
    """Non-zero starting sums, so the test checks G += ..., not G = ..."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(D, D, generator=g).to(device), torch.rand(D, generator=g).to(device)


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("device, backend", CASES)
def test_gram_update_matches_float64(device, backend, dtype, masked):
    D, T = shape_for(backend, device)
    x = make_x(T, D, dtype, device, seed=1)
    mask = make_mask(T, device, seed=2) if masked else None
    G, s = accumulators(D, device)
    G0, s0 = G.double().cpu(), s.double().cpu()
    n = ops.gram_update(G, s, x, mask, backend=backend)
    xr = x.double().cpu()[mask.cpu()] if masked else x.double().cpu()
    assert n == xr.shape[0]
    assert ops.last_backend("gram_update") == backend
    assert rel_err(G, G0 + xr.T @ xr, upper=True) < TOL[device]
    assert rel_err(s, s0 + xr.sum(0)) < TOL[device]


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("device, backend", CASES)
def test_gram_update_cross_matches_float64(device, backend, dtype, masked):
    D, T = shape_for(backend, device)
    Dt = D // 4 + 3  # teacher width differs from the student's: a transposed result cannot pass
    xs, xt = make_x(T, D, dtype, device, seed=3), make_x(T, Dt, dtype, device, seed=4)
    mask = make_mask(T, device, seed=5) if masked else None
    G_ss, s_s = accumulators(D, device)
    G0, s0 = G_ss.double().cpu(), s_s.double().cpu()
    G_ts, s_t = torch.ones(Dt, D, device=device), torch.ones(Dt, device=device)
    n = ops.gram_update_cross(G_ss, G_ts, s_s, s_t, xs, xt, mask, backend=backend)
    keep = mask.cpu() if masked else slice(None)
    xs64, xt64 = xs.double().cpu()[keep], xt.double().cpu()[keep]
    assert n == xs64.shape[0]
    assert ops.last_backend("gram_update_cross") == backend
    assert rel_err(G_ss, G0 + xs64.T @ xs64, upper=True) < TOL[device]
    assert rel_err(G_ts, 1 + xt64.T @ xs64) < TOL[device]
    assert rel_err(s_s, s0 + xs64.sum(0)) < TOL[device]
    assert rel_err(s_t, 1 + xt64.sum(0)) < TOL[device]


@pytest.mark.parametrize("device, backend", CASES)
def test_streamed_batches_equal_one_pass(device, backend):
    """Accumulating k uneven, masked batches equals one pass over their concatenation (DESIGN §1)."""
    D, T = shape_for(backend, device)
    x, mask = make_x(T, D, torch.float16, device, seed=6), make_mask(T, device, seed=8)
    G1, s1 = torch.zeros(D, D, device=device), torch.zeros(D, device=device)
    G2, s2 = torch.zeros(D, D, device=device), torch.zeros(D, device=device)
    n1 = ops.gram_update(G1, s1, x, mask, backend=backend)
    cuts = [0, T // 7, T // 2, T // 2 + 1, T]
    n2 = sum(ops.gram_update(G2, s2, x[a:b], mask[a:b], backend=backend) for a, b in zip(cuts, cuts[1:]))
    assert n1 == n2 == int(mask.sum())
    assert rel_err(G2, G1, upper=True) < 1e-6 and rel_err(s2, s1) < 1e-6


@pytest.mark.parametrize("device, backend", CASES)
def test_strided_and_sliced_inputs(device, backend):
    """Rows read with a stride wider than D, and a column-major x, give the contiguous result."""
    D, T = shape_for(backend, device)
    wide = make_x(T, D + 5, torch.float32, device, seed=9)
    x = wide[:, 2:D + 2]
    G, s = torch.zeros(D, D, device=device), torch.zeros(D, device=device)
    ops.gram_update(G, s, x, backend=backend)
    Gt, st = torch.zeros(D, D, device=device), torch.zeros(D, device=device)
    ops.gram_update(Gt, st, x.T.contiguous().T, backend=backend)
    want = x.double().cpu().T @ x.double().cpu()
    assert rel_err(G, want, upper=True) < TOL[device] and rel_err(Gt, want, upper=True) < TOL[device]


@pytest.mark.parametrize("device, backend", CASES)
def test_everything_masked_adds_nothing(device, backend):
    D = 37
    x = make_x(50, D, torch.float32, device, seed=10)
    G, s = accumulators(D, device)
    G0, s0 = G.clone(), s.clone()
    assert ops.gram_update(G, s, x, torch.zeros(50, dtype=torch.bool, device=device), backend=backend) == 0
    assert ops.gram_update(G, s, x[:0], backend=backend) == 0
    assert torch.equal(G.triu(), G0.triu()) and torch.equal(s, s0)


def _solve_args(device: str, backend: str = "torch"):
    """LIAR solve arguments whose G comes from `backend` (cpp and triton write only the upper triangle)."""
    D = 57
    x = make_x(400, D, torch.float32, device, seed=11)
    G, s = torch.zeros(D, D, device=device), torch.zeros(D, device=device)
    n = ops.gram_update(G, s, x, backend=backend)
    W, b = make_x(10, D, torch.float32, device, seed=12), torch.randn(10, device=device)
    kept, pruned = torch.arange(0, D, 2, device=device), torch.arange(1, D, 2, device=device)
    return G, s, n, W, b, kept, pruned, 1e-2, True, False


@pytest.mark.parametrize("device, backend", CASES)
def test_opcheck(device, backend):
    """Schemas, fakes and kernels pass torch.library.opcheck with `backend` serving the Gram ops, and
    liar_solve with G produced by `backend`."""
    from liar.ops.dispatch import prefer

    D, T = 45, 120
    x, xt = make_x(T, D, torch.bfloat16, device, seed=13), make_x(T, 19, torch.bfloat16, device, seed=14)
    with prefer(backend):
        for mask in (None, make_mask(T, device, seed=15)):
            opcheck(torch.ops.liar.gram_update.default,
                    (torch.zeros(D, D, device=device), torch.zeros(D, device=device), x, mask))
            assert ops.last_backend("gram_update") == backend
            opcheck(torch.ops.liar.gram_update_cross.default,
                    (torch.zeros(D, D, device=device), torch.zeros(19, D, device=device),
                     torch.zeros(D, device=device), torch.zeros(19, device=device), x, xt, mask))
    opcheck(torch.ops.liar.liar_solve.default, _solve_args(device, backend))


@pytest.mark.parametrize("device, backend", CASES)
def test_liar_solve_reads_only_the_upper_triangle_and_never_writes_G(device, backend):
    args = _solve_args(device, backend)
    G = args[0]
    before = G.clone()
    weight, bias, Q, P, info = ops.liar_solve(*args)
    assert torch.equal(G, before)  # bit for bit, lower triangle included
    full = G.triu() + G.triu(1).T
    want = ops.liar_solve(full, *args[1:])
    assert torch.equal(weight, want.weight) and torch.equal(bias, want.bias) and torch.equal(Q, want.Q)
    assert isinstance(info, ops.SolveInfo) and info.lam > 0 and info.fallback is None
    assert ops.last_backend("liar_solve") == "torch"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("device", DEVICES)
def test_auto_runs_the_first_capable_backend(device, dtype):
    """`auto` names the first available, capable, self-checked backend of AUTO_ORDER for the device and dtype,
    and computes exactly what that backend computes when named."""
    from liar.ops.dispatch import auto_order

    best = next(n for n in auto_order(device, dtype) if n in backends_for(device))
    x = make_x(64, 33, dtype, device, seed=16)
    G, s = torch.zeros(33, 33, device=device), torch.zeros(33, device=device)
    ops.gram_update(G, s, x)
    assert ops.last_backend("gram_update") == best
    G_named, s_named = torch.zeros(33, 33, device=device), torch.zeros(33, device=device)
    ops.gram_update(G_named, s_named, x, backend=best)
    assert torch.equal(G.triu(), G_named.triu()) and torch.equal(s, s_named)
    if best != "torch":
        assert ops.self_checks()[f"{best} gram_update {device} {str(dtype).removeprefix('torch.')}"] == "ok"


def test_auto_on_cpu_takes_mkl_for_fp32_and_the_cpp_kernels_for_bf16():
    """The measured choice (liar.ops.dispatch.AUTO_ORDER): MKL through the reference beats the cpp fp32 kernel on
    these sizes, the AMX/AVX-512 cpp kernel beats the reference 6-8x in bf16."""
    if not BACKENDS["cpp"].available:
        pytest.skip(f"cpp backend unavailable: {BACKENDS['cpp'].error}")
    for dtype, expected in ((torch.float32, "torch"), (torch.float64, "torch"), (torch.bfloat16, "cpp"),
                            (torch.float16, "cpp")):
        ops.gram_update(torch.zeros(9, 9), torch.zeros(9), make_x(20, 9, dtype, "cpu", seed=17))
        assert ops.last_backend("gram_update") == expected, dtype


def test_named_backend_without_the_op_hands_it_to_torch():
    """cpp has no liar_solve kernel: that op runs on the reference, and last_backend says so."""
    if not BACKENDS["cpp"].available:
        pytest.skip(f"cpp backend unavailable: {BACKENDS['cpp'].error}")
    ops.liar_solve(*_solve_args("cpu"), backend="cpp")
    assert ops.last_backend("liar_solve") == "torch"


def test_auto_chooses_by_dtype(monkeypatch):
    """A backend without a float64 kernel is skipped by auto for float64 activations and refused by name."""
    name = "cpp" if BACKENDS["cpp"].available else "triton"
    if not BACKENDS[name].available:
        pytest.skip("no compiled backend on CPU")
    monkeypatch.setattr(BACKENDS[name], "dtypes", (torch.float32, torch.float16, torch.bfloat16))
    x = make_x(20, 9, torch.float64, "cpu", seed=30)
    ops.gram_update(torch.zeros(9, 9), torch.zeros(9), x)
    assert ops.last_backend("gram_update") == "torch"
    with pytest.raises(TypeError, match=f"backend '{name}' has no float64 kernel for gram_update"):
        ops.gram_update(torch.zeros(9, 9), torch.zeros(9), x, backend=name)


def test_broken_kernel_fails_its_self_check_and_auto_falls_back(monkeypatch):
    """A compiled kernel that disagrees with the reference is never trusted by auto: a warning, the reference
    serves, and self_checks() says why."""
    from liar.ops import selfcheck

    if not BACKENDS["cpp"].available:
        pytest.skip(f"cpp backend unavailable: {BACKENDS['cpp'].error}")
    real = BACKENDS["cpp"].kernels["gram_update"]

    def broken(G, s, x, mask):  # forgets the last channel's column sums: a plausible tiling bug
        real(G, s, x, mask)
        G[:, -1] = 0.0

    monkeypatch.setitem(BACKENDS["cpp"].kernels, "gram_update", broken)
    monkeypatch.setattr(selfcheck, "_RESULTS", {})
    x = make_x(40, 13, torch.bfloat16, "cpu", seed=31)  # auto tries cpp first for 16-bit activations on CPU
    G, s = torch.zeros(13, 13), torch.zeros(13)
    with pytest.warns(RuntimeWarning, match="cpp kernel of gram_update failed its self-check"):
        ops.gram_update(G, s, x)
    assert ops.last_backend("gram_update") == "torch"
    assert "differs from the reference" in ops.self_checks()["cpp gram_update cpu bfloat16"]
    x64 = x.double()
    assert rel_err(G, x64.T @ x64, upper=True) < 1e-6


LAYOUTS = ["contiguous", "transposed", "sliced"]


def _accumulator_in(layout: str, shape: tuple[int, ...], device: str, seed: int) -> torch.Tensor:
    """Non-zero sums stored contiguously, as a transposed view, or as a slice of a wider buffer."""
    g = torch.Generator().manual_seed(seed)
    if layout == "contiguous" or len(shape) == 1 and layout == "transposed":
        return torch.rand(shape, generator=g).to(device)
    if layout == "transposed":
        return torch.rand(shape[::-1], generator=g).to(device).T
    wide = torch.rand(tuple(d + 3 for d in shape), generator=g).to(device)
    return wide[(slice(1, None),) * len(shape)][tuple(slice(0, d) for d in shape)]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES + [torch.float64], ids=str)
@pytest.mark.parametrize("device, backend", CASES)
def test_every_backend_every_layout_every_dtype(device, backend, dtype, layout):
    """Each backend either computes the reference's answer for any accumulator layout or raises the shared
    error for a dtype it lacks."""
    D, Dt, T = (37, 11, 90) if backend == "triton" else (101, 23, 300)
    xs, xt, mask = make_x(T, D, dtype, device, 40), make_x(T, Dt, dtype, device, 41), make_mask(T, device, 42)
    acc = [_accumulator_in(layout, shape, device, seed)
           for seed, shape in enumerate([(D, D), (Dt, D), (D,), (Dt,)])]
    want = [a.double().cpu() for a in acc]
    if dtype not in BACKENDS[backend].dtypes:
        with pytest.raises(TypeError, match=f"backend '{backend}' has no float64 kernel"):
            ops.gram_update_cross(*acc, xs, xt, mask, backend=backend)
        assert all(torch.equal(a.double().cpu(), w) for a, w in zip(acc, want))
        return
    ops.gram_update_cross(*acc, xs, xt, mask, backend=backend)
    m = mask.cpu()
    xs64, xt64 = xs.double().cpu()[m], xt.double().cpu()[m]
    assert rel_err(acc[0], want[0] + xs64.T @ xs64, upper=True) < TOL[device]
    assert rel_err(acc[1], want[1] + xt64.T @ xs64) < TOL[device]
    assert rel_err(acc[2], want[2] + xs64.sum(0)) < TOL[device]
    assert rel_err(acc[3], want[3] + xt64.sum(0)) < TOL[device]


@pytest.mark.parametrize("call, error, match", [
    (lambda x: ops.gram_update(torch.zeros(8, 8, dtype=torch.float64), torch.zeros(8), x), TypeError, "float32"),
    (lambda x: ops.gram_update(torch.zeros(7, 7), torch.zeros(7), x), ValueError, r"\[8, 8\]"),
    (lambda x: ops.gram_update(torch.zeros(8, 8), torch.zeros(8), x.int()), TypeError, "floating"),
    (lambda x: ops.gram_update(torch.zeros(8, 8), torch.zeros(8), x[0]), ValueError, "tokens, D"),
    (lambda x: ops.gram_update(torch.zeros(8, 8), torch.zeros(8), x, torch.ones(5)), ValueError, "mask"),
    (lambda x: ops.gram_update(torch.zeros(8, 8), torch.zeros(8), x, backend="nope"), ValueError, "unknown backend"),
    (lambda x: ops.gram_update_cross(torch.zeros(8, 8), torch.zeros(8, 3), torch.zeros(8), torch.zeros(3), x,
                                     x[:, :3]), ValueError, r"G_ts must be \[3, 8\]"),
    (lambda x: ops.gram_update_cross(torch.zeros(8, 8), torch.zeros(3, 8), torch.zeros(8), torch.zeros(3), x,
                                     x[:4, :3]), ValueError, "x_t"),
])
def test_bad_inputs_raise_clear_errors(call, error, match):
    with pytest.raises(error, match=match):
        call(make_x(5, 8, torch.float32, "cpu", seed=17))


def test_unavailable_backend_says_why():
    x = make_x(5, 8, torch.float32, "cpu", seed=18)
    unavailable = [n for n, b in BACKENDS.items() if not b.available]
    for name in unavailable:
        with pytest.raises(RuntimeError, match="unavailable"):
            ops.gram_update(torch.zeros(8, 8), torch.zeros(8), x, backend=name)
    if BACKENDS["cuda"].available:
        with pytest.raises(RuntimeError, match="no kernels for cpu"):
            ops.gram_update(torch.zeros(8, 8), torch.zeros(8), x, backend="cuda")


def _python(script: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", script], env={**os.environ, **env}, capture_output=True,
                          text=True, timeout=120)


def test_liar_backend_env_overrides_auto():
    """LIAR_BACKEND=torch (read at import) makes `auto` the reference."""
    done = _python("import torch, liar.ops as ops\n"
                   "ops.gram_update(torch.zeros(5, 5), torch.zeros(5), torch.randn(9, 5))\n"
                   "assert ops.last_backend('gram_update') == 'torch', ops.last_backend('gram_update')\n",
                   LIAR_BACKEND="torch")
    assert done.returncode == 0, done.stderr[-2000:]


def test_bad_liar_backend_warns_at_import_and_raises_only_when_auto_is_used():
    done = _python("import torch, warnings\n"
                   "with warnings.catch_warnings(record=True) as seen:\n"
                   "    warnings.simplefilter('always')\n"
                   "    import liar.ops as ops\n"
                   "assert any('LIAR_BACKEND=' in str(w.message) for w in seen), [str(w.message) for w in seen]\n"
                   "ops.gram_update(torch.zeros(5, 5), torch.zeros(5), torch.randn(9, 5), backend='torch')\n"
                   "try:\n"
                   "    ops.gram_update(torch.zeros(5, 5), torch.zeros(5), torch.randn(9, 5))\n"
                   "except ValueError as err:\n"
                   "    assert \"LIAR_BACKEND='tirton' is not a backend\" in str(err), err\n"
                   "else:\n"
                   "    raise AssertionError('auto ran with a bad LIAR_BACKEND')\n",
                   LIAR_BACKEND="tirton")
    assert done.returncode == 0, done.stderr[-2000:]


def test_import_of_liar_and_liar_ops_is_light():
    """Neither `import liar` nor `import liar.ops` loads transformers or safetensors (tqdm comes with torch)."""
    done = _python("import sys, liar, liar.ops\n"
                   "heavy = [m for m in ('transformers', 'safetensors', 'liar.api', 'liar.pipeline')\n"
                   "         if m in sys.modules]\n"
                   "assert not heavy, heavy\n"
                   "assert liar.PruneConfig is not None and 'transformers' not in sys.modules\n")
    assert done.returncode == 0, done.stderr[-2000:]
