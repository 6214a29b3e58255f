"""Perplexity of a causal LM on a token stream: non-overlapping windows, fp32/fp64 loss accumulation."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm


@torch.no_grad()
def perplexity(model, ids: torch.Tensor, seqlen: int = 512, batch_size: int = 4) -> dict:
    """ids: [T] token ids. Scores every window's next-token predictions; returns ppl, nll and tokens."""
    windows = ids.numel() // seqlen
    if windows == 0:
        raise ValueError(f"the text gives {ids.numel()} tokens, fewer than one window of seqlen={seqlen}")
    device = next(model.parameters()).device
    chunks = ids[: windows * seqlen].reshape(windows, seqlen)
    nll, count = 0.0, 0
    for start in tqdm(range(0, windows, batch_size), desc="perplexity", unit="batch", leave=False):
        batch = chunks[start : start + batch_size].to(device)
        logits = model(input_ids=batch, use_cache=False).logits[:, :-1].float()
        target = batch[:, 1:]
        nll += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), reduction="sum"))
        count += target.numel()
    return {"ppl": math.exp(nll / count), "nll": nll / count, "tokens": count, "seqlen": seqlen}
