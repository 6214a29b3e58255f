"""alpha='auto': the damping chosen per consumer by 2-fold cross-validation on the calibration batches."""

from __future__ import annotations

import json

import pytest
import torch
import transformers
from torch import nn

import liar
from liar import damping
from liar.damping import GRID, AlphaChoice, choose_alpha
from liar.forward import BatchMeta, run_block
from liar.report import PruneReport
from liar.report_text import render
from liar.stats import FoldedStats, GramStats
from liar.structure import complement
from tests.conftest import calib_ids, tiny_model

D, D_OUT = 13, 7
KEPT = torch.tensor([0, 2, 3, 5, 8, 9, 11, 12])
PRUNED = complement(KEPT, D)


def correlated(n: int, seed: int) -> torch.Tensor:
    """[n, D] float64 tokens: 5 latent factors plus noise, a nonzero mean, uneven channel scales."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(5, D, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    scale = torch.linspace(0.3, 2.9, D, dtype=torch.float64)
    x = torch.randn(n, 5, generator=g, dtype=torch.float64) @ mix + 0.4 * torch.randn(n, D, generator=g,
                                                                                     dtype=torch.float64)
    return (x + 0.7) * scale


def stats_of(X: torch.Tensor) -> GramStats:
    stats = GramStats.zeros(X.shape[1])
    stats.update(X.float())
    return stats


def brute_force(X_train, X_test, W, b, alpha, intercept):
    """Σ‖(W x + b) − (W_R' x_R + b')‖² over X_test, the reconstruction solved on X_train with damping alpha."""
    R, S = KEPT, PRUNED
    if intercept:
        mu = X_train.mean(0)
        C = (X_train - mu).T @ (X_train - mu) / X_train.shape[0]
    else:
        mu, C = torch.zeros(D, dtype=torch.float64), X_train.T @ X_train / X_train.shape[0]
    C_RR = C[R][:, R]
    lam = alpha * float(C_RR.diagonal().mean())
    Q = C[S][:, R] @ torch.linalg.inv(C_RR + lam * torch.eye(len(R), dtype=torch.float64))
    P = mu[S] - Q @ mu[R]
    W_new, b_new = W[:, R] + W[:, S] @ Q, b + W[:, S] @ P
    return float(((X_test @ W.T + b) - (X_test[:, R] @ W_new.T + b_new)).square().sum())


@pytest.mark.parametrize("intercept", [True, False])
def test_the_fold_choice_equals_brute_force_on_raw_activations(intercept):
    X = (correlated(37, seed=1), correlated(41, seed=2))  # odd, unequal folds: D=13 < N, yet damping matters
    W = torch.randn(D_OUT, D, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    b = torch.randn(D_OUT, generator=torch.Generator().manual_seed(4), dtype=torch.float64) + 0.5
    b_ref = b if intercept else torch.zeros_like(b)  # without intercept b' = b: the bias cancels either way
    brute = {a: brute_force(X[0], X[1], W, b_ref, a, intercept) + brute_force(X[1], X[0], W, b_ref, a, intercept)
             for a in GRID}
    energy = sum(float((x @ W.T + b).square().sum()) for x in X)
    choice = choose_alpha((stats_of(X[0]), stats_of(X[1])), W.float(), b.float(), KEPT, PRUNED, intercept,
                          torch.float64)
    best = min(brute, key=brute.get)
    assert choice.alpha == best and best not in (GRID[0], GRID[-1])  # an interior choice: the test has teeth
    for a in GRID:
        assert choice.heldout[a] == pytest.approx(brute[a] / energy, rel=1e-4)


def test_folds_alternate_by_batch_and_sum_to_the_total_statistics():
    block = nn.Sequential(nn.Linear(5, D), nn.Tanh(), nn.Linear(D, 3)).double()
    hidden = [torch.randn(3, 11, 5, generator=torch.Generator().manual_seed(i), dtype=torch.float64)
              for i in range(5)]
    masks = [torch.rand(3, 11, generator=torch.Generator().manual_seed(9 + i)) > 0.3 for i in range(5)]
    metas = [BatchMeta((), {}, m, index=i) for i, m in enumerate(masks)]
    folded, whole = FoldedStats.zeros(D), GramStats.zeros(D)
    run_block(block, metas, hidden, {block[2]: folded}, None)
    run_block(block, metas, hidden, {block[2]: whole}, None)
    for k, fold in enumerate(folded.folds):
        x = torch.cat([torch.tanh(block[0](h))[m] for i, (h, m) in enumerate(zip(hidden, masks)) if i % 2 == k])
        assert fold.n == x.shape[0]
        assert torch.allclose(fold.gram().double(), x.T @ x, rtol=1e-5, atol=1e-5)
    total = folded.total()
    assert total.n == whole.n == sum(int(m.sum()) for m in masks)
    assert torch.allclose(total.gram(), whole.gram(), rtol=1e-6, atol=1e-5)
    assert torch.allclose(total.s, whole.s, rtol=1e-6, atol=1e-6)


def test_auto_alpha_end_to_end_reports_each_choice_and_the_output_loads(model_dir, text_file, tmp_path):
    out = tmp_path / "out"
    config = liar.PruneConfig(ratio=0.35, nsamples=9, seqlen=41, batch_size=2, alpha="auto", calib=str(text_file))
    report = liar.prune(model_dir, out, config)
    saved = json.loads((out / "liar_report.json").read_text())
    assert saved["config"]["alpha"] == "auto"
    for layer in PruneReport.load(out / "liar_report.json").layers:
        for m in (layer.attn, layer.mlp):
            assert m.alpha in GRID and set(m.alpha_heldout) == {f"{a:.3g}" for a in GRID}
            assert m.alpha_heldout[f"{m.alpha:.3g}"] == min(m.alpha_heldout.values())
            assert m.lam > 0 and m.errors["liar"] <= m.errors["bias"] + 1e-9
    assert "damping chosen per consumer" in report.summary() and "α attn" in render(report)
    pruned = transformers.AutoModelForCausalLM.from_pretrained(out)  # stock config: plain transformers loads it
    with torch.no_grad():
        assert torch.isfinite(pruned(input_ids=calib_ids(2, 29)).logits).all()


def test_the_chosen_alpha_is_the_one_the_final_solve_uses(monkeypatch):
    """The choice reaches the solve as explicit state: with every consumer choosing α = 0.0316, auto prunes exactly
    as the fixed α = 0.0316 does (up to the order of the fp32 sums: folds added vs one stream)."""
    fast = dict(nsamples=8, seqlen=48, batch_size=2, ratio=0.3)
    picked = lambda *args, **kwargs: AlphaChoice(0.0316, {0.0316: 0.0})  # noqa: E731
    monkeypatch.setattr(damping, "choose_alpha", picked)
    auto, fixed = tiny_model(), tiny_model()
    report = liar.prune(auto, None, liar.PruneConfig(alpha="auto", **fast), calibration=calib_ids())
    reference = liar.prune(fixed, None, liar.PruneConfig(alpha=0.0316, **fast), calibration=calib_ids())
    for a, b in zip(report.layers, reference.layers, strict=True):
        assert a.attn.alpha == a.mlp.alpha == b.attn.alpha == 0.0316 and a.attn.alpha_heldout == {"0.0316": 0.0}
        assert a.mlp.lam == pytest.approx(b.mlp.lam, rel=1e-5) and a.mlp.kept == b.mlp.kept
    for p, q in zip(auto.parameters(), fixed.parameters(), strict=True):
        assert torch.allclose(p, q, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("changes, message", [
    (dict(alpha="automatic"), "a number >= 0 or 'auto'"),
    (dict(alpha="0.01"), "a number >= 0 or 'auto'"),
    (dict(alpha="auto", calibration="sequential"), "dense calibration"),
    (dict(alpha="auto", reconstruct="bias"), "solves nothing"),
    (dict(alpha="auto", nsamples=8, batch_size=8), "two folds"),
])
def test_a_bad_alpha_is_refused_with_a_clear_error(changes, message):
    with pytest.raises(ValueError, match=message):
        liar.PruneConfig(**changes)


def test_the_command_line_takes_auto_or_a_number(capsys):
    from liar.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["prune", "--alpha", "often", "--dry-run"])
    assert exit_.value.code == 2 and "neither a number nor 'auto'" in capsys.readouterr().err
