"""Evaluation: perplexity of a causal LM on a token stream (non-overlapping windows, fp32/fp64 loss
accumulation), and accuracy of a sequence classifier on labelled texts (batched, padded, no grads)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from liar.data import windows


@torch.no_grad()
def perplexity(model, ids: torch.Tensor, seqlen: int = 512, batch_size: int = 4, prefix: list[int] = ()) -> dict:
    """ids: [T] token ids. Scores every window's next-token predictions; returns ppl, nll and tokens.
    `prefix`: tokens every window starts with (liar.data.window_prefix, e.g. `<bos>`), never scored.

    Non-finite logits raise FloatingPointError rather than reporting a perplexity of nan.
    """
    check_causal_lm(model)
    if seqlen < 2 or batch_size < 1:
        raise ValueError(f"seqlen={seqlen} and batch_size={batch_size}: a window needs seqlen >= 2 tokens (one "
                         "prediction) and batch_size >= 1; pass --seqlen 2 or more and --batch-size 1 or more")
    chunks = windows(ids, seqlen, list(prefix))
    if chunks.shape[0] == 0:
        raise ValueError(f"the text gives {ids.numel()} tokens, fewer than one window of seqlen={seqlen}; "
                         "pass more text or a smaller --seqlen")
    device = next(model.parameters()).device
    first = max(len(prefix), 1)  # the first scored position: a prefix is context, not text
    nll, count = 0.0, 0
    for start in tqdm(range(0, chunks.shape[0], batch_size), desc="perplexity", unit="batch", leave=False):
        batch = chunks[start : start + batch_size].to(device)
        logits = model(input_ids=batch, use_cache=False).logits[:, first - 1 : -1].float()
        if not torch.isfinite(logits).all():
            raise FloatingPointError(
                f"the model produced NaN/Inf logits in windows {start}..{start + len(batch) - 1}; check the weights "
                "for NaN/Inf and the dtype (float16 overflows easily): try --dtype float32")
        target = batch[:, first:]
        nll += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), reduction="sum"))
        count += target.numel()
    return {"ppl": math.exp(nll / count), "nll": nll / count, "tokens": count, "seqlen": seqlen}


def check_causal_lm(model) -> None:
    """Perplexity needs next-token logits: refuse classifiers and bare encoders with the command to use."""
    name = type(model).__name__
    if not (name.endswith("ForCausalLM") or name.endswith("LMHeadModel")):
        raise ValueError(f"perplexity needs a causal LM; this checkpoint loads as {name}"
                         + ("; use `liar eval accuracy`" if name.endswith("ForSequenceClassification") else
                            "; pass a causal LM folder (e.g. LlamaForCausalLM)"))


def label_ids(raw: list, config) -> list[int]:
    """Class indices for raw labels: integers (or integer strings) as they are, names via config.label2id."""
    names = {str(k).lower(): int(v) for k, v in (getattr(config, "label2id", None) or {}).items()}
    out = []
    for label in raw:
        text = str(label).strip()
        if text.lstrip("-").isdigit():
            out.append(int(text))
        elif text.lower() in names:
            out.append(names[text.lower()])
        else:
            raise ValueError(f"label {label!r} is neither an integer nor one of the model's labels "
                             f"({', '.join(names) or 'none defined'}); write labels as class indices")
    bad = [y for y in out if not 0 <= y < config.num_labels]
    if bad:
        raise ValueError(f"label {bad[0]} is outside the model's {config.num_labels} classes")
    return out


@torch.no_grad()
def accuracy(model, tokenizer, texts: list[str], labels: list[int], batch_size: int = 64,
             max_length: int = 128) -> dict:
    """Argmax accuracy of a sequence classifier over `texts` (truncated to max_length tokens).

    Texts are batched in length order, so each batch pads to nearly its own length (about 2x fewer tokens
    than random batches on Rotten Tomatoes sentences); padding is masked, so the order changes no result.
    """
    if not type(model).__name__.endswith("ForSequenceClassification"):
        raise ValueError(f"accuracy needs a sequence classifier (e.g. BertForSequenceClassification); this checkpoint "
                         f"loads as {type(model).__name__}, which has no classification head")
    if batch_size < 1 or max_length < 2:
        raise ValueError(f"batch_size={batch_size} and max_length={max_length}: pass --batch-size 1 or more and "
                         "--max-length 2 or more")
    if len(texts) != len(labels) or not texts:
        raise ValueError(f"need as many labels as texts (and at least one); got {len(texts)} and {len(labels)}")
    device = next(model.parameters()).device
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    target = torch.as_tensor(labels, dtype=torch.long)
    correct = 0
    for start in tqdm(range(0, len(order), batch_size), desc="accuracy", unit="batch", leave=False):
        idx = order[start : start + batch_size]
        enc = tokenizer([texts[i] for i in idx], padding=True, truncation=True, max_length=max_length,
                        return_tensors="pt").to(device)
        predicted = model(**enc).logits.argmax(dim=-1).cpu()
        correct += int((predicted == target[idx]).sum())
    return {"accuracy": correct / len(texts), "n": len(texts), "correct": correct}


# Perplexity window lengths as the papers use them: LLM-Pruner and FLAP score WikiText2/PTB in windows of 128
# tokens; SliceGPT in windows of 2048 (capped here by the model's max positions).
SEQLEN_PRESETS = {"llm-pruner": 128, "flap": 128, "slicegpt": 2048}


def resolve_seqlen(seqlen: str | int, config) -> int:
    """Tokens per window: a preset is capped by the model's max_position_embeddings; an explicit integer is kept
    as asked (liar.plan_checks.seqlen_warnings says when it exceeds the trained positions)."""
    if seqlen in SEQLEN_PRESETS:
        limit = getattr(config, "max_position_embeddings", None) or float("inf")
        return int(min(SEQLEN_PRESETS[seqlen], limit))
    return seqlen
