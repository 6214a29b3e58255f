"""Sequential calibration: the student/teacher fit, on tiny models."""

from __future__ import annotations

import torch

from liar.functional import CrossStats, reconstruct, reconstruct_sequential
from tests.test_pipeline import logits, masked_dense, prune_copy
from tests.test_reconstruct import KEPT, correlated, layer, rel_fro, stats_of
from tests.conftest import tiny_model


def test_cross_fit_is_dense_liar_when_student_equals_teacher():
    X = correlated()
    W, b = layer()
    cross = CrossStats.zeros(X.shape[1], backend="torch")
    cross.update(X, X)
    cross.add_target(X @ W.T + b)
    for mode in ("liar", "bias", "none"):
        dense = reconstruct(stats_of(X), W, b, KEPT, mode=mode, solve_dtype=torch.float64)
        seq = reconstruct_sequential(cross, W, b, KEPT, mode=mode, solve_dtype=torch.float64)
        assert rel_fro(seq.weight, dense.weight) < 1e-6 and rel_fro(seq.bias, dense.bias) < 1e-5
        assert abs(seq.errors[mode] - dense.errors[mode]) < 1e-5


def test_cross_fit_is_least_squares_to_teacher_outputs():
    X = correlated()
    Xs = X + 0.3 * correlated(seed=5)  # the student drifted away from the teacher
    W, b = layer()
    cross = CrossStats.zeros(X.shape[1], backend="torch")
    cross.update(Xs, X)
    cross.add_target(X @ W.T + b)
    r = reconstruct_sequential(cross, W, b, KEPT, alpha=0.0, solve_dtype=torch.float64)
    design = torch.cat([Xs[:, KEPT].double(), torch.ones(len(X), 1, dtype=torch.float64)], 1)
    target = X.double() @ W.double().T + b.double()
    sol = torch.linalg.lstsq(design, target).solution
    assert rel_fro(r.weight, sol[:-1].T) < 1e-4 and rel_fro(r.bias, sol[-1]) < 1e-4
    measured = float((target - design[:, :-1] @ r.weight.double().T - r.bias.double()).square().sum()
                     / target.square().sum())
    assert abs(measured - r.errors["liar"]) < 1e-4 * measured
    assert r.errors["liar"] < r.errors["bias"] < r.errors["none"]


def test_sequential_first_attention_matches_dense_mode():
    """Block 0's attention sees identical student and teacher inputs; its FFN already sees pruned attention."""
    dense_model = tiny_model()
    a, rep_a = prune_copy(dense_model, ratio=0.3)
    b, rep_b = prune_copy(dense_model, ratio=0.3, calibration="sequential")
    assert rep_a.layers[0].attn.kept == rep_b.layers[0].attn.kept
    for name, p in a.model.layers[0].self_attn.named_parameters():
        other = b.model.layers[0].self_attn.get_parameter(name)
        # Two fp32 solves of differently formed systems agree to ~ε·cond; cond ≲ 1/α = 100 here.
        assert float((other - p).detach().norm()) <= 1e-4 * float(p.detach().norm()) + 1e-12
    assert not torch.allclose(a.model.layers[0].mlp.down_proj.weight, b.model.layers[0].mlp.down_proj.weight)
    assert rep_b.config["calibration"] == "sequential"


def test_sequential_physical_pruning_equals_masked_reconstruction():
    dense_model = tiny_model()
    pruned, report = prune_copy(dense_model, ratio=0.35, calibration="sequential")
    expected = logits(masked_dense(dense_model, pruned, report))
    assert float((logits(pruned) - expected).abs().max()) < 1e-4 * float(expected.abs().max())
    for layer_report in report.layers:
        e = layer_report.mlp.errors
        assert e["liar"] <= e["bias"] + 1e-9
