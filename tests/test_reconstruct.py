"""DESIGN.md §1 invariants of the LIAR maths, against float64 closed forms."""

from __future__ import annotations

import pytest
import torch

from liar.functional import GramStats, reconstruct
from liar.reconstruct import damped_solve
from liar.structure import complement

N, D, D_OUT = 1500, 45, 13  # odd sizes on purpose


def correlated(n=N, d=D, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(d, d, generator=g) / d**0.5
    mean = torch.randn(d, generator=g)
    return ((torch.randn(n, d, generator=g) @ mix + mean) * (1 + torch.rand(d, generator=g))).to(dtype)


def layer(seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(D_OUT, D, generator=g), torch.randn(D_OUT, generator=g)


def stats_of(X, chunks=1):
    s = GramStats.zeros(X.shape[1], backend="torch")
    for part in X.chunk(chunks):
        s.update(part)
    return s


def rel_fro(a, b):
    return float((a.double() - b.double()).norm() / b.double().norm())


KEPT = torch.tensor([i for i in range(D) if i % 3 != 1])


def test_lambda_zero_equals_float64_least_squares():
    X = correlated()
    W, b = layer()
    r = reconstruct(stats_of(X), W, b, KEPT, alpha=0.0, solve_dtype=torch.float64)
    X64 = X.double()
    design = torch.cat([X64[:, KEPT], torch.ones(N, 1, dtype=torch.float64)], dim=1)
    target = X64 @ W.double().T + b.double()
    sol = torch.linalg.lstsq(design, target).solution
    # The only error left is the fp32 accumulation of G; 1e-4 relative is far below any real mismatch.
    assert rel_fro(r.weight, sol[:-1].T) < 1e-4
    assert rel_fro(r.bias, sol[-1]) < 1e-4


def test_flap_and_plain_special_cases():
    X = correlated()
    W, b = layer()
    pruned = complement(KEPT, D)
    bias = reconstruct(stats_of(X), W, b, KEPT, mode="bias")
    torch.testing.assert_close(bias.weight, W[:, KEPT])
    expected = b.double() + W[:, pruned].double() @ X[:, pruned].double().mean(0)
    assert rel_fro(bias.bias, expected) < 1e-5
    none = reconstruct(stats_of(X), W, b, KEPT, mode="none")
    torch.testing.assert_close(none.weight, W[:, KEPT])
    torch.testing.assert_close(none.bias, b)


@pytest.mark.parametrize("alpha", [0.0, 1e-2, 1.0])
def test_liar_never_worse_than_bias_never_worse_than_none(alpha):
    X = correlated()
    W, b = layer()
    r = reconstruct(stats_of(X), W, b, KEPT, alpha=alpha)
    e = r.errors
    assert e["liar"] <= e["bias"] + 1e-9 and e["bias"] <= e["none"] + 1e-9
    assert e["liar"] < 0.9 * e["none"]  # correlated channels: interpolation recovers a real share
    # The statistics-only error equals the error measured on the data itself.
    out = X.double() @ W.double().T + b.double()
    rebuilt = X[:, KEPT].double() @ r.weight.double().T + r.bias.double()
    measured = float((out - rebuilt).square().sum() / out.square().sum())
    assert abs(measured - e["liar"]) < 1e-4 * max(measured, 1e-6) + 1e-7


def test_no_intercept_variant_is_bias_free_least_squares():
    X = correlated()
    W, _ = layer()
    r = reconstruct(stats_of(X), W, None, KEPT, alpha=0.0, intercept=False, solve_dtype=torch.float64)
    assert r.bias is None
    sol = torch.linalg.lstsq(X.double()[:, KEPT], X.double() @ W.double().T).solution
    assert rel_fro(r.weight, sol.T) < 1e-4


def test_streamed_statistics_equal_one_pass():
    X = correlated(dtype=torch.bfloat16)
    once, streamed = stats_of(X), stats_of(X, chunks=7)
    assert once.n == streamed.n == N
    assert rel_fro(streamed.gram(), once.gram()) < 1e-6
    assert rel_fro(streamed.s, once.s) < 1e-6
    ref = X.double()
    assert rel_fro(once.gram(), ref.T @ ref) < 1e-6


def test_mask_excludes_rows():
    X = correlated()
    mask = torch.rand(N, generator=torch.Generator().manual_seed(3)) > 0.3
    masked = GramStats.zeros(D, backend="torch")
    masked.update(X, mask)
    assert masked.n == int(mask.sum())
    assert rel_fro(masked.gram(), stats_of(X[mask]).gram()) < 1e-7


def test_singular_system_escalates_damping_and_says_so():
    """Channels 0 and 1 are the same column of ones: Cholesky's second pivot is 16 − 4·4 = 0 exactly in any
    precision (every entry is a small integer and √16 is exact), so the undamped solve must escalate."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(-3, 4, (16, 8), generator=g).double()
    x[:, 0] = 1.0
    x = torch.cat([x[:, :1], x], dim=1)  # a duplicated channel: singular
    A = x.T @ x
    B = torch.randn(9, 2, dtype=torch.float64, generator=g)
    assert int(torch.linalg.cholesky_ex(A.float()).info) == 2
    X, info = damped_solve(A, B, alpha=0.0, dtype=torch.float32)
    assert info.escalations > 0 and info.lam > 0 and info.fallback is None and torch.isfinite(X).all()


def test_indefinite_system_falls_back_to_eigh():
    A = torch.diag(torch.tensor([1.0, -1e6, 2.0]))
    X, info = damped_solve(A, torch.ones(3, 1), alpha=1e-2, dtype=torch.float32)
    assert info.fallback == "eigh" and torch.isfinite(X).all()


def test_non_finite_statistics_raise():
    s = stats_of(correlated())
    s.G[0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="NaN/Inf"):
        s.check_finite("layer 0 attn")


def test_bad_kept_indices_raise():
    X = correlated()
    W, b = layer()
    with pytest.raises(ValueError, match="kept must be"):
        reconstruct(stats_of(X), W, b, torch.tensor([0, D]))


def _old_full_form(stats, W, b, kept, pruned, Q, P):
    """The previous error form: Σ‖dW x + db‖² as one D×D quadratic form tr(dW G dWᵀ) + 2 dbᵀ dW s + N‖db‖², in
    float64 from the symmetrized G, relative to the same form of the dense output."""
    G = (stats.G.triu() + stats.G.triu(1).T).double()
    s, n = stats.s.double(), stats.n

    def energy(dW, db):
        return float(((dW @ G) * dW).sum() + 2 * db @ (dW @ s) + n * db @ db)

    W64 = W.double()
    W_S = W64[:, pruned]
    dW = torch.zeros_like(W64)
    dW[:, pruned] = W_S
    total = energy(W64, b.double())
    none = energy(dW, torch.zeros(W.shape[0], dtype=torch.float64))
    bias = energy(dW, -(W_S @ (s[pruned] / n)))
    dW[:, kept] = -(W_S @ Q.double())
    return {"none": none / total, "bias": bias / total, "liar": energy(dW, -(W_S @ P.double())) / total}


@pytest.mark.parametrize("solve_dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("alpha", [0.0, 1e-2])
def test_cheap_error_forms_equal_the_full_quadratic_form(alpha, solve_dtype):
    """none/bias from the S×S block, liar from E = C_SS − Q C_RS − λQQᵀ: the same numbers as the D×D form."""
    from liar import ops

    X = correlated(dtype=torch.bfloat16)
    W, b = layer()
    stats = stats_of(X)
    pruned = complement(KEPT, D)
    sol = ops.liar_solve(stats.G, stats.s, stats.n, W, b, KEPT, pruned, alpha=alpha,
                         solve_fp64=solve_dtype == torch.float64)
    new = reconstruct(stats, W, b, KEPT, alpha=alpha, solve_dtype=solve_dtype).errors
    old = _old_full_form(stats, W, b, KEPT, pruned, sol.Q, sol.P)
    # fp64: rounding only. fp32: the identity Q(C_RR + λI) = C_SR holds to the fp32 solve's residual.
    tol = 1e-9 if solve_dtype == torch.float64 else 1e-4
    for mode in ("none", "bias", "liar"):
        assert abs(new[mode] - old[mode]) <= tol * old[mode], (mode, new[mode], old[mode])


@pytest.mark.parametrize("mode", ["none", "bias"])
def test_none_and_bias_run_no_solve(mode, monkeypatch):
    import liar.ops.solve

    def no_solve(*args, **kwargs):
        raise AssertionError("a solve ran for mode=" + mode)

    monkeypatch.setattr(liar.ops.solve, "damped_solve", no_solve)
    monkeypatch.setattr(liar.ops.solve, "liar_solve", no_solve)
    r = reconstruct(stats_of(correlated()), *layer(), KEPT, mode=mode)
    assert set(r.errors) == {"none", "bias"} and r.info is None


@pytest.mark.parametrize("alpha", [float("nan"), float("inf"), -1.0])
def test_bad_alpha_is_refused_by_the_one_solve(alpha):
    A = torch.eye(3) * 2
    with pytest.raises(ValueError, match="alpha must be a finite number"):
        damped_solve(A, torch.ones(3, 1), alpha=alpha)


def _tf32(t: torch.Tensor) -> torch.Tensor:
    """t rounded to TF32 (10-bit mantissa, to nearest), as tensor cores round matmul inputs."""
    bits = t.float().contiguous().view(torch.int32)
    return ((bits + 0x1000) & ~0x1FFF).view(torch.float32)


def test_reported_errors_hold_their_tolerance_with_tf32_inputs(monkeypatch):
    """On CUDA the positive quadratic forms of the reported errors run in TF32 (liar.reconstruct._tf32); emulated
    here by rounding every matmul input inside that block to TF32: none / bias / liar move by less than
    TF32_RELATIVE_TOLERANCE, and they do move (the emulation is not a no-op)."""
    import contextlib

    from liar import reconstruct as rc

    X = correlated(n=4000, d=97)
    W, b = torch.randn(29, 97, generator=torch.Generator().manual_seed(3)), torch.randn(29)
    kept = torch.tensor([i for i in range(97) if i % 4])
    exact = reconstruct(stats_of(X), W, b, kept).errors
    real_matmul = torch.Tensor.__matmul__

    @contextlib.contextmanager
    def emulated(_device):
        monkeypatch.setattr(torch.Tensor, "__matmul__", lambda a, c: real_matmul(_tf32(a), _tf32(c)))
        try:
            yield
        finally:
            monkeypatch.setattr(torch.Tensor, "__matmul__", real_matmul)

    monkeypatch.setattr(rc, "_tf32", emulated)
    rounded = reconstruct(stats_of(X), W, b, kept).errors
    gaps = {m: abs(rounded[m] - exact[m]) / exact[m] for m in exact}
    assert max(gaps.values()) < rc.TF32_RELATIVE_TOLERANCE, gaps
    assert max(gaps.values()) > 1e-6, gaps
