"""Shared fixtures: tiny random-init models of every supported family, a character tokenizer, real text."""

from __future__ import annotations

import os
import string

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

# Triton kernels run on CPU only under the interpreter, which must be on before anything imports triton.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import transformers  # noqa: E402

VOCAB = 128
TINY = dict(vocab_size=VOCAB, hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=6,
            num_key_value_heads=2, head_dim=16, max_position_embeddings=256, tie_word_embeddings=False)
FAMILIES = {
    "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
    "mistral": (transformers.MistralConfig, transformers.MistralForCausalLM),
    "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM),
}

TEXT = (
    "The film opens on a quiet harbour town where nothing much happens until a stranger arrives. "
    "Critics praised the photography, the score and the patient pacing, though some found the ending abrupt. "
    "Its lead performance carries long scenes without dialogue, and the supporting cast is uniformly good.\n\n"
) * 12


def tiny_model(family: str = "llama", seed: int = 0, **overrides) -> transformers.PreTrainedModel:
    """A random-init model whose weights are scaled so activations are O(1) and channels differ."""
    config_cls, model_cls = FAMILIES[family]
    torch.manual_seed(seed)
    model = model_cls(config_cls(**{**TINY, **overrides}))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2 and "embed" not in name:
                p.mul_(torch.rand(p.shape[1]) * 4 + 0.2)  # uneven channel scales: criteria have work to do
    return model.eval()


def char_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"<unk>": 0, "<eos>": 1, **{c: i + 2 for i, c in enumerate(string.printable)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", unk_token="<unk>")


def calib_ids(n: int = 8, seqlen: int = 48, seed: int = 1) -> torch.Tensor:
    return torch.randint(2, VOCAB, (n, seqlen), generator=torch.Generator().manual_seed(seed))


@pytest.fixture
def model_dir(tmp_path):
    """A tiny LLaMA checkpoint folder with its tokenizer, as a user would have on disk."""
    path = tmp_path / "tiny-llama"
    tiny_model().save_pretrained(path)
    char_tokenizer().save_pretrained(path)
    return path


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "calib.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path
