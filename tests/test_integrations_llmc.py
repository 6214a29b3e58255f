"""llm-compressor integration. The equivalence tests need llm-compressor's own environment (its pins differ
from liar's dev venv): `bash scripts/ci_llmcompressor.sh` builds it and runs `pytest -m llmcompressor`."""

from __future__ import annotations

import copy
import importlib.util
import sys

import pytest
import torch

from tests.conftest import calib_ids, char_tokenizer, tiny_model

HAVE_LLMC = importlib.util.find_spec("llmcompressor") is not None
in_llmc_env = pytest.mark.skipif(not HAVE_LLMC, reason="run by scripts/ci_llmcompressor.sh in llm-compressor's env")


def _from_disk(tmp_path, family: str = "llama"):
    """llm-compressor re-reads the config from model.config.name_or_path: the model must come from a folder."""
    from transformers import AutoModelForCausalLM

    path = tmp_path / f"tiny-{family}"
    tiny_model(family).save_pretrained(path)
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def _oneshot(model, ids: torch.Tensor, **modifier):
    from datasets import Dataset
    from llmcompressor import oneshot

    from liar.integrations.llmcompressor import LIARPruningModifier

    ds = Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": torch.ones_like(ids).tolist()})
    mod = LIARPruningModifier(**modifier)
    oneshot(model=model, dataset=ds, recipe=[mod], pipeline="sequential", propagate_error=False,
            num_calibration_samples=ids.shape[0], max_seq_length=ids.shape[1], processor=char_tokenizer(),
            batch_size=1)
    return mod


@pytest.mark.parametrize("family,reconstruct,intercept", [("llama", "liar", True), ("llama", "bias", True),
                                                          ("qwen2", "liar", False)])
@pytest.mark.llmcompressor
@in_llmc_env
def test_modifier_equals_liar_prune(family, reconstruct, intercept, tmp_path):
    import liar

    model = _from_disk(tmp_path, family)
    reference = copy.deepcopy(model)
    ids = calib_ids(8, 48)
    mod = _oneshot(model, ids, ratio=0.3, reconstruct=reconstruct, intercept=intercept)
    config = liar.PruneConfig(ratio=0.3, reconstruct=reconstruct, intercept=intercept, calibration="dense")
    report = liar.prune(reference, tmp_path / "ref", config, calibration=ids)
    for i, layer in enumerate(report.layers):
        assert (mod.kept_units[i]["heads"], mod.kept_units[i]["neurons"]) == (layer.attn.kept, layer.mlp.kept)
    got, ref = model.state_dict(), reference.state_dict()
    assert got.keys() == ref.keys()
    for k in got:
        # same units, same fp32 solve; the Gram sums accumulate in another order (batches of 1 vs 8): measured
        # up to 1.4e-5 of the tensor scale on o_proj. A bias b + W_S P is a sum of terms on its weight's scale,
        # so it is compared on that scale (1.2e-6 on a 8e-3 bias measured, its o_proj weight ~0.1).
        scale = float(ref[k].abs().max())
        if k.endswith(".bias") and k.removesuffix("bias") + "weight" in ref:
            scale = max(scale, float(ref[k.removesuffix("bias") + "weight"].abs().max()))
        torch.testing.assert_close(got[k], ref[k], rtol=0, atol=1e-4 * scale, msg=lambda m, k=k: f"{k}: {m}")
    assert model.config.intermediate_size == reference.config.intermediate_size < 96


@pytest.mark.llmcompressor
@in_llmc_env
def test_saved_modifier_output_loads_like_liar_prune(tmp_path):
    import liar

    model = _from_disk(tmp_path)
    ids = calib_ids(6, 40)
    _oneshot(model, ids, ratio=0.25)
    model.save_pretrained(tmp_path / "llmc")
    loaded = liar.load_pruned(tmp_path / "llmc")
    from transformers import AutoModelForCausalLM

    stock = AutoModelForCausalLM.from_pretrained(tmp_path / "llmc")
    assert loaded.config.attention_bias and loaded.model.layers[0].self_attn.o_proj.bias is not None
    with torch.no_grad():
        expected = model(input_ids=ids).logits
        torch.testing.assert_close(stock(input_ids=ids).logits, expected, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(loaded(input_ids=ids).logits, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.llmcompressor
@in_llmc_env
def test_global_allocation_is_refused_with_the_reason():
    from liar.integrations.llmcompressor import LIARPruningModifier

    with pytest.raises(ValueError, match="allocation='uniform' only"):
        LIARPruningModifier(ratio=0.2, allocation="global")
    with pytest.raises(ValueError, match="ratio"):
        LIARPruningModifier(ratio=1.5)


def test_missing_llmcompressor_names_the_extra(monkeypatch):
    monkeypatch.delitem(sys.modules, "liar.integrations.llmcompressor", raising=False)
    monkeypatch.setitem(sys.modules, "llmcompressor", None)
    with pytest.raises(ImportError, match=r"pip install 'liar\[llmcompressor\]'"):
        import liar.integrations.llmcompressor  # noqa: F401
