"""Torch-Pruning integration: LIAR applied inside TP's interactive loop, on tiny LLaMA models."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest
import torch

from tests.conftest import calib_ids, tiny_model

import torch_pruning as tp  # the test extra installs it

from liar.integrations.torch_pruning import TPReconstructor, traceable
from liar.integrations.tp_cli import build_pruner

ALPHA = 1e-2


def heads_and_ffn_pruner(model, ratio: float = 0.5):
    """TP pruning heads and FFN channels only: the residual stream's producers are ignored as roots."""
    cfg = model.config
    num_heads, ignored = {}, [model.lm_head, model.model.embed_tokens]
    for layer in model.model.layers:
        a = layer.self_attn
        num_heads[a.q_proj] = cfg.num_attention_heads
        num_heads[a.k_proj] = num_heads[a.v_proj] = cfg.num_key_value_heads
        ignored += [a.o_proj, layer.mlp.down_proj]
    with traceable(model):
        return tp.pruner.BasePruner(
            model, example_inputs=calib_ids(1, 16), importance=tp.importance.GroupMagnitudeImportance(p=2),
            global_pruning=False, output_transform=lambda x: x.logits, pruning_ratio=ratio, ignored_layers=ignored,
            num_heads=num_heads, prune_num_heads=True, prune_head_dims=False, head_pruning_ratio=ratio,
        )


def dense_inputs(model, names: list[str], ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every token's input to each named linear, captured with plain hooks (independent of liar)."""
    got: dict[str, list[torch.Tensor]] = {n: [] for n in names}

    def keep(name):
        return lambda module, args: got[name].append(args[0].reshape(-1, args[0].shape[-1]))

    hooks = [model.get_submodule(n).register_forward_pre_hook(keep(n)) for n in names]
    with torch.no_grad():
        model(input_ids=ids)
    for h in hooks:
        h.remove()
    return {n: torch.cat(v).double() for n, v in got.items()}


def liar_reference(W: torch.Tensor, b: torch.Tensor | None, X: torch.Tensor, kept: torch.Tensor):
    """LIAR in float64 from its definition (README "How it works"):
    Q = C_SR (C_RR + λI)⁻¹, W_R' = W_R + W_S Q, b' = b + W_S (μ_S − Q μ_R)."""
    W = W.detach().double()
    pruned = torch.tensor([i for i in range(W.shape[1]) if i not in set(kept.tolist())])
    mu = X.mean(0)
    C = (X - mu).T @ (X - mu) / X.shape[0]
    C_RR = C[kept][:, kept]
    lam = ALPHA * C_RR.diagonal().mean()
    Q = torch.linalg.solve(C_RR + lam * torch.eye(len(kept), dtype=torch.float64), C[kept][:, pruned]).T
    P = mu[pruned] - Q @ mu[kept]
    bias = (torch.zeros(W.shape[0], dtype=torch.float64) if b is None else b.detach().double()) + W[:, pruned] @ P
    return W[:, kept] + W[:, pruned] @ Q, bias


@pytest.mark.parametrize("kv_heads", [6, 2])
def test_tp_plus_liar_equals_liar_reconstruction_of_the_same_units(kv_heads):
    model = tiny_model(num_key_value_heads=kv_heads, intermediate_size=90)
    dense = copy.deepcopy(model)
    ids = calib_ids(6, 40)
    pruner = heads_and_ffn_pruner(model)
    rec = TPReconstructor(model, mode="liar", alpha=ALPHA)
    rec.calibrate([ids[:3], ids[3:]])
    cuts: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for group in rec.step(pruner):
            cuts.update({rec.names[m]: removed for m, removed in rec.input_cuts(group).items()})
            group.prune()
    assert any(n.endswith("down_proj") for n in cuts)
    # TP 1.6.1 prunes heads only without GQA (with 6 query / 2 KV heads it keeps every head)
    assert any(n.endswith("o_proj") for n in cuts) == (kv_heads == 6)
    X = dense_inputs(dense, list(cuts), ids)
    for name, removed in cuts.items():
        lin = dense.get_submodule(name)
        kept = torch.tensor([i for i in range(lin.in_features) if i not in set(removed.tolist())])
        W_ref, b_ref = liar_reference(lin.weight, lin.bias, X[name], kept)
        got = model.get_submodule(name)
        scale = float(W_ref.abs().max())
        # fp32 statistics and solve against a float64 reference: measured max deviation ~1e-5 of the scale
        torch.testing.assert_close(got.weight.double(), W_ref, rtol=0, atol=2e-4 * scale)
        torch.testing.assert_close(got.bias.double(), b_ref, rtol=0, atol=2e-4 * scale)


def test_tp_plus_none_equals_tp_alone():
    a, b = tiny_model(), tiny_model()
    for model, wrapped in ((a, False), (b, True)):
        pruner = heads_and_ffn_pruner(model)
        rec = TPReconstructor(model, mode="none")
        rec.calibrate([calib_ids(2, 24)])
        groups = rec.step(pruner) if wrapped else pruner.step(interactive=True)
        with torch.no_grad():
            for group in groups:
                group.prune()
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and sa["model.layers.0.mlp.down_proj.weight"].shape[1] < 96
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def test_hidden_size_pruning_reconstructs_residual_consumers():
    """TP's LLM-example settings also cut the residual stream: q/k/v, gate/up and the untied LM head are rebuilt."""
    model = tiny_model()
    ids = calib_ids(6, 40)
    dense_logits = model(input_ids=ids).logits.detach()
    errors = {}
    for mode in ("none", "liar"):
        m = copy.deepcopy(model)
        pruner = build_pruner(m, ids[:1, :16], 0.25)
        rec = TPReconstructor(m, mode=mode)
        rec.calibrate([ids])
        with torch.no_grad():
            for group in rec.step(pruner):
                group.prune()
        assert m.lm_head.in_features < 48
        if mode == "liar":
            assert {"lm_head", "model.layers.1.self_attn.k_proj", "model.layers.0.mlp.up_proj"} <= set(rec.errors)
        with torch.no_grad():
            errors[mode] = float((m(input_ids=ids).logits - dense_logits).norm() / dense_logits.norm())
    assert errors["liar"] < errors["none"], errors


@pytest.mark.parametrize("keep_hidden", [False, True])
def test_cli_writes_a_stock_checkpoint(model_dir, text_file, tmp_path, keep_hidden):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "tp-liar"
    proc = subprocess.run(
        [sys.executable, "-m", "liar.integrations.torch_pruning", "--model", str(model_dir), "--out", str(out),
         "--ratio", "0.3", "--calib", str(text_file), "--nsamples", "4", "--seqlen", "32", "--reconstruct", "liar",
         *(["--keep-hidden"] if keep_hidden else [])],
        capture_output=True, text=True, check=True,
    )
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    assert row["params_after"] < row["params_before"] and row["reconstructed_linears"] > 0
    assert row["calib_error_median"]["liar"] < row["calib_error_median"]["none"]
    model = AutoModelForCausalLM.from_pretrained(out)
    assert (model.config.hidden_size == 48) == keep_hidden and model.config.hidden_size == row["hidden_size"]
    assert model.config.intermediate_size < 96
    assert model.config.attention_bias and model.model.layers[0].self_attn.o_proj.bias is not None
    assert sum(p.numel() for p in model.parameters()) == row["params_after"]


def test_reconstructor_refuses_a_linear_pruned_behind_its_back():
    model = tiny_model()
    pruner = heads_and_ffn_pruner(model)
    rec = TPReconstructor(model)
    rec.calibrate([calib_ids(2, 24)])
    groups = list(pruner.step(interactive=True))
    groups[0].prune()  # sliced without apply()
    again = [g for g in groups if set(TPReconstructor.input_cuts(g)) & set(TPReconstructor.input_cuts(groups[0]))]
    with pytest.raises(RuntimeError, match="call apply"):
        rec.apply(again[0])


def test_missing_torch_pruning_names_the_extra(monkeypatch):
    monkeypatch.delitem(sys.modules, "liar.integrations.torch_pruning", raising=False)
    monkeypatch.setitem(sys.modules, "torch_pruning", None)
    with pytest.raises(ImportError, match=r"pip install 'liar\[torch-pruning\]'"):
        import liar.integrations.torch_pruning  # noqa: F401


def test_import_liar_imports_no_integration():
    prefixes = ("liar.integrations", "torch_pruning", "llmcompressor")
    code = f"import sys, liar; print(sorted(m for m in sys.modules if m.startswith({prefixes!r})))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
