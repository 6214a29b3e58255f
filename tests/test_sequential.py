"""Sequential calibration: the student/teacher fit, on tiny models."""

from __future__ import annotations

import pytest
import torch

from liar.functional import CrossStats, reconstruct, reconstruct_sequential
from tests.test_pipeline import logits, masked_dense, prune_copy
from tests.test_reconstruct import KEPT, correlated, layer, rel_fro, stats_of
from tests.conftest import tiny_model

NORM_AFTER_CONSUMER = ("bert", "gemma3")  # post-norm, sandwich norms: no residual target (refused, tested below)


def test_cross_fit_is_dense_liar_when_student_equals_teacher():
    X = correlated()
    W, b = layer()
    cross = CrossStats.zeros(X.shape[1], W.shape[0], backend="torch")
    cross.update(X, X @ W.T + b)
    for mode in ("liar", "bias", "none"):
        dense = reconstruct(stats_of(X), W, b, KEPT, mode=mode, solve_dtype=torch.float64)
        seq = reconstruct_sequential(cross, W, b, KEPT, mode=mode, solve_dtype=torch.float64)
        # The targets come from an fp32 matmul, as a model's consumer makes them (dense mode applies W in fp64):
        # ε·‖W‖‖x‖ per target, times cond(C_RR) ≲ 1/α = 100 through the solve → 4e-6 measured.
        assert rel_fro(seq.weight, dense.weight) < 2e-5 and rel_fro(seq.bias, dense.bias) < 2e-5
        assert abs(seq.errors[mode] - dense.errors[mode]) < 1e-5


def test_cross_fit_is_least_squares_to_teacher_outputs():
    X = correlated()
    Xs = X + 0.3 * correlated(seed=5)  # the student drifted away from the teacher
    W, b = layer()
    cross = CrossStats.zeros(X.shape[1], W.shape[0], backend="torch")
    cross.update(Xs, X @ W.T + b)
    r = reconstruct_sequential(cross, W, b, KEPT, alpha=0.0, solve_dtype=torch.float64)
    design = torch.cat([Xs[:, KEPT].double(), torch.ones(len(X), 1, dtype=torch.float64)], 1)
    target = X.double() @ W.double().T + b.double()
    sol = torch.linalg.lstsq(design, target).solution
    assert rel_fro(r.weight, sol[:-1].T) < 1e-4 and rel_fro(r.bias, sol[-1]) < 1e-4
    measured = float((target - design[:, :-1] @ r.weight.double().T - r.bias.double()).square().sum()
                     / target.square().sum())
    assert abs(measured - r.errors["liar"]) < 1e-4 * measured
    assert r.errors["liar"] < r.errors["bias"] < r.errors["none"]


@pytest.mark.parametrize("mix", [0.3, 0.5])
def test_blended_fit_is_weighted_least_squares(mix):
    """sequential_mix = β: the fit on blended statistics is the least-squares fit to the same targets from the
    teacher's inputs (weight β) and the drifted student's (weight 1 − β), stacked."""
    X = correlated()
    Xs = X + 0.3 * correlated(seed=5)
    W, b = layer()
    y = X @ W.T + b
    student, dense = (CrossStats.zeros(X.shape[1], W.shape[0], backend="torch") for _ in range(2))
    student.update(Xs, y)
    dense.update(X, y)
    r = reconstruct_sequential(student.blend_(dense, mix), W, b, KEPT, alpha=0.0, solve_dtype=torch.float64)
    ones = torch.ones(len(X), 1, dtype=torch.float64)
    design = torch.cat([mix**0.5 * torch.cat([X[:, KEPT].double(), ones], 1),
                        (1 - mix)**0.5 * torch.cat([Xs[:, KEPT].double(), ones], 1)])
    target = torch.cat([mix**0.5 * y.double(), (1 - mix)**0.5 * y.double()])
    sol = torch.linalg.lstsq(design, target).solution
    assert rel_fro(r.weight, sol[:-1].T) < 1e-4 and rel_fro(r.bias, sol[-1]) < 1e-4
    measured = float((target - design @ torch.cat([r.weight.double().T, r.bias.double()[None]])).square().sum()
                     / target.square().sum())
    assert abs(measured - r.errors["liar"]) < 1e-4 * measured


def test_sequential_mix_is_validated():
    import liar

    with pytest.raises(ValueError, match="--calibration sequential"):
        liar.PruneConfig(sequential_mix=0.5)
    with pytest.raises(ValueError, match=r"in \[0, 1\)"):
        liar.PruneConfig(calibration="sequential", sequential_mix=1.0)


def test_sequential_mix_moves_the_fit_toward_dense_calibration():
    """Block 1's FFN (same kept neurons in every run): the larger the dense pairs' weight, the closer its fit to
    dense calibration's."""
    dense_model = tiny_model()
    dense, dense_report = prune_copy(dense_model, ratio=0.3)
    distances = []
    for mix in (0.0, 0.5, 0.9):
        pruned, report = prune_copy(dense_model, ratio=0.3, calibration="sequential", sequential_mix=mix)
        assert report.layers[1].mlp.kept == dense_report.layers[1].mlp.kept
        assert report.config["sequential_mix"] == mix
        gap = pruned.model.layers[1].mlp.down_proj.weight - dense.model.layers[1].mlp.down_proj.weight
        distances.append(float(gap.detach().norm()))
    assert distances[0] > distances[1] > distances[2] > 0


@pytest.mark.parametrize("target", ["output", "residual"])
def test_sequential_first_attention_matches_dense_mode(target):
    """Block 0's attention sees identical student and teacher inputs (so the residual target's drift h_t − h_s is
    zero there); its FFN already sees pruned attention."""
    dense_model = tiny_model()
    a, rep_a = prune_copy(dense_model, ratio=0.3)
    b, rep_b = prune_copy(dense_model, ratio=0.3, calibration="sequential", sequential_target=target)
    assert rep_a.layers[0].attn.kept == rep_b.layers[0].attn.kept
    for name, p in a.model.layers[0].self_attn.named_parameters():
        other = b.model.layers[0].self_attn.get_parameter(name)
        # Two fp32 solves of differently formed systems agree to ~ε·cond; cond ≲ 1/α = 100 here.
        assert float((other - p).detach().norm()) <= 1e-4 * float(p.detach().norm()) + 1e-12
    assert not torch.allclose(a.model.layers[0].mlp.down_proj.weight, b.model.layers[0].mlp.down_proj.weight)
    assert rep_b.config["calibration"] == "sequential"


@torch.no_grad()
def test_residual_target_fits_the_dense_block_output():
    """Block 0: both targets keep the same units (same student statistics), and the residual target's FFN fit is
    the least-squares fit of the dense block output itself, so its output error on the calibration tokens is no
    larger than the output target's (undamped, with intercept: an exact optimum)."""
    from tests.conftest import calib_ids

    dense_model = tiny_model()
    ids = calib_ids()
    hidden = lambda m: m(ids, output_hidden_states=True).hidden_states[1]  # noqa: E731 (after block 0)
    dense = hidden(dense_model)
    errors = {}
    for target in ("output", "residual"):
        pruned, report = prune_copy(dense_model, ratio=0.35, alpha=0.0, calibration="sequential",
                                    sequential_target=target)
        errors[target] = float((hidden(pruned) - dense).square().sum() / dense.square().sum())
        assert report.config["sequential_target"] == target
    assert errors["residual"] <= errors["output"] * (1 + 1e-5)
    assert errors["residual"] < 0.99 * errors["output"]  # and it is a real change, not the same fit


@pytest.mark.parametrize("family", NORM_AFTER_CONSUMER)
def test_residual_target_is_refused_where_a_norm_follows_the_consumer(family):
    import liar
    from tests.conftest import calib_ids
    from tests.test_pipeline import FAST

    model = FAMILY_MODELS[family]()
    config = liar.PruneConfig(**FAST, ratio=0.3, calibration="sequential", sequential_target="residual")
    with pytest.raises(ValueError, match="sequential_target='output'"):
        liar.prune(model, None, config, calibration=calib_ids(8, 48, seed=3))


def test_residual_target_needs_sequential_calibration():
    import liar

    with pytest.raises(ValueError, match="--calibration sequential"):
        liar.PruneConfig(sequential_target="residual")


def test_sequential_physical_pruning_equals_masked_reconstruction():
    dense_model = tiny_model()
    pruned, report = prune_copy(dense_model, ratio=0.35, calibration="sequential")
    expected = logits(masked_dense(dense_model, pruned, report))
    assert float((logits(pruned) - expected).abs().max()) < 1e-4 * float(expected.abs().max())
    for layer_report in report.layers:
        e = layer_report.mlp.errors
        assert e["liar"] <= e["bias"] + 1e-9


# ---- pass reuse (liar.sequential) against the three full passes it replaced ----------------------------------

def _three_full_passes(arch, layer, shape, budget, metas, teacher, student, config, index, new_store, as_saved):
    """The sequential step before pass reuse (the reference): A. teacher through the dense block, student up to
    o_proj; B. student through the pruned attention up to down_proj; C. student through the pruned block. The
    targets as liar.sequential defines them: the dense consumer outputs, or (residual) the dense residual stream
    after each consumer less the student's before it."""
    import time as _time

    from liar.forward import generator, new_stats, run_block
    from liar.prune_layer import prune_attention, prune_ffn
    from liar.report import LayerReport
    from liar.sequential import _record

    residual = config.sequential_target == "residual"
    began = _time.perf_counter()
    o, down = arch.attn_consumer(layer), arch.ffn_consumer(layer)
    stats = new_stats(arch, layer, config.backend, cls=CrossStats)
    dense_pairs = new_stats(arch, layer, config.backend, cls=CrossStats)  # the teacher's own (input, output)
    t_out, s_out, t_aim = new_store(), new_store(), new_store()
    for meta, h_t, h_s in zip(metas, teacher.drain(), student, strict=True):
        x_t, y, out_t = _record(layer, meta, h_t, [o, down], outputs=[o, down])
        t_out.append(out_t)
        t_aim.append(out_t if residual else y[down])
        x_s, _, _ = _record(layer, meta, h_s, [o], stop_at=o)
        stats["attn"].update(x_s[o], y[o].reshape(h_t.shape) + h_t - h_s if residual else y[o], meta.mask)
        dense_pairs["attn"].update(x_t[o], y[o], meta.mask)
        dense_pairs["mlp"].update(x_t[down], y[down], meta.mask)
    if config.sequential_mix:
        stats["attn"].blend_(dense_pairs["attn"], config.sequential_mix)
    attn = prune_attention(arch, layer, shape, stats["attn"], budget.attn_units, config,
                           generator(config, index, "attn"))
    as_saved(layer)
    o, down = arch.attn_consumer(layer), arch.ffn_consumer(layer)
    for meta, h_s, aim in zip(metas, student, t_aim.drain(), strict=True):
        x_s, y_s, _ = _record(layer, meta, h_s, [down], stop_at=down, outputs=[o])
        stats["mlp"].update(x_s[down], aim - (h_s + y_s[o]) if residual else aim, meta.mask)
    if config.sequential_mix:
        stats["mlp"].blend_(dense_pairs["mlp"], config.sequential_mix)
    mlp = prune_ffn(arch, layer, shape, stats["mlp"], budget.neurons, config, generator(config, index, "mlp"))
    as_saved(layer)
    run_block(layer, metas, student.drain(), {}, s_out)
    seconds = _time.perf_counter() - began
    stages = {"forward": seconds, "statistics": 0.0, "solve": 0.0}
    return LayerReport(index=index, attn=attn, mlp=mlp, stages=stages), t_out, s_out


def _family_models():
    from tests.conftest import FAMILIES as CORE
    from tests.test_bert import tiny_bert
    from tests.test_families import FAMILIES as MORE
    from tests.test_families import tiny

    models = {family: (lambda f=family: tiny_model(f, num_hidden_layers=3)) for family in CORE}
    models.update({family: (lambda f=family: tiny(f)) for family in MORE})
    models["bert"] = tiny_bert  # its attention module adds the residual and norm: the attention is run
    return models


FAMILY_MODELS = _family_models()


REUSE_CASES = [(family, reconstruct, target, 0.0) for family in FAMILY_MODELS
               for reconstruct, target in (("liar", "output"), ("none", "output"), ("liar", "residual"))
               if target == "output" or family not in NORM_AFTER_CONSUMER]
REUSE_CASES += [("llama", "liar", target, 0.5) for target in ("output", "residual")]  # sequential_mix


@pytest.mark.parametrize("family, reconstruct, target, mix", REUSE_CASES)
def test_pass_reuse_equals_three_full_passes(family, reconstruct, target, mix, monkeypatch):
    """The same units kept, the same weights and outputs (fp32 summation order apart) as the reference."""
    import copy

    import liar
    from liar import pipeline
    from tests.conftest import calib_ids
    from tests.test_pipeline import FAST

    # The residual target holds h_t − h_s, a difference of close terms: fp32 summation-order noise in the student
    # (2.5e-4 of a bias measured) says nothing of the passes, so those cases run in float64, where they agree.
    dtype, tol = (torch.float64, 1e-9) if target == "residual" else (torch.float32, 1e-4)
    dense = FAMILY_MODELS[family]().to(dtype)
    config = liar.PruneConfig(**FAST, ratio=0.35, calibration="sequential", reconstruct=reconstruct,
                              sequential_target=target, sequential_mix=mix)
    ids = calib_ids(8, 48, seed=3)
    reused = copy.deepcopy(dense)
    got = liar.prune(reused, None, config, calibration=ids)
    monkeypatch.setattr(pipeline, "sequential_step", _three_full_passes)
    reference = copy.deepcopy(dense)
    expected = liar.prune(reference, None, config, calibration=ids)
    for a, b in zip(got.layers, expected.layers, strict=True):
        assert (a.attn.kept, a.attn.kept_kv, a.mlp.kept) == (b.attn.kept, b.attn.kept_kv, b.mlp.kept)
        for mode, error in b.mlp.errors.items():
            assert abs(a.mlp.errors[mode] - error) <= tol * error + 1e-7
    got_params, expected_params = dict(reused.named_parameters()), dict(reference.named_parameters())
    assert got_params.keys() == expected_params.keys()
    for name, p in expected_params.items():
        scale = float(p.detach().abs().max()) + 1e-12
        assert float((got_params[name] - p).detach().abs().max()) <= tol * scale, name


@pytest.mark.parametrize("family", ["llama", "phi3", "bert"])
def test_pass_reuse_runs_each_producer_only_where_its_output_is_new(family, monkeypatch):
    """Per block and batch: the attention producers run for the teacher and the student's pass A only, the FFN
    producers for the teacher and pass B, the consumers once each for the teacher and the student (BERT's
    attention module adds its residual and norm, so its attention runs in every pass)."""
    from collections import Counter

    from torch import nn

    import liar
    from liar.models import architecture_for
    from tests.conftest import calib_ids
    from tests.test_pipeline import FAST

    dense = FAMILY_MODELS[family]()
    arch = architecture_for(dense)
    layers = arch.layer_list(dense)
    runs: Counter = Counter()
    real = nn.Linear.forward

    def counted(self, x):
        for i, layer in enumerate(layers):
            for path, module in layer.named_modules():
                if module is self:
                    runs[i, path] += 1
        return real(self, x)

    monkeypatch.setattr(nn.Linear, "forward", counted)
    liar.prune(dense, None, liar.PruneConfig(**FAST, ratio=0.35, calibration="sequential"),
               calibration=calib_ids(8, 48, seed=3))
    batches = FAST["nsamples"] // FAST["batch_size"]
    skipped = family != "bert"
    for i in range(len(layers)):
        assert runs[i, arch.q] == (2 if skipped else 4) * batches  # teacher, A (B, C)
        assert runs[i, arch.o] == (2 if skipped else 3) * batches  # teacher, B (C)
        assert all(runs[i, path] == 2 * batches for path in arch.ffn_in)  # teacher, pass B
        assert runs[i, arch.ffn_out] == 2 * batches  # teacher, pass C
