"""`python -m liar.integrations.torch_pruning`: Torch-Pruning's LLM-example pruning, reconstructed by liar.

Settings follow TP's examples/LLMs/prune_llm.py: GroupMagnitudeImportance(p=2, mean), local pruning of
heads (num_heads per q/k/v, no head-dim pruning), FFN channels and the hidden size at the same ratio,
LM head ignored as a root. One change: round_to is 4 there; here it is lcm(4, heads) so the pruned
hidden size stays a multiple of the head count, which LlamaConfig validates (576 → 460 would not load).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from importlib.metadata import version
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from liar import corpora, data
from liar.integrations.torch_pruning import MODES, TPReconstructor, tp, traceable
from liar.integrations.stock_config import bias_policy, finalize_config
from liar.models import architecture_for


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m liar.integrations.torch_pruning", description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="transformers checkpoint folder (LLaMA / Mistral / Qwen2)")
    p.add_argument("--out", required=True, help="output folder (must not exist)")
    p.add_argument("--ratio", type=float, required=True, help="TP pruning_ratio and head_pruning_ratio, in (0, 1)")
    p.add_argument("--calib", required=True, help=f"calibration text: a named corpus ({', '.join(corpora.NAMES)}) or a "
                   "file (.txt blank-line separated, .jsonl, .csv)")
    p.add_argument("--nsamples", type=int, default=64)
    p.add_argument("--seqlen", type=int, default=512)
    p.add_argument("--reconstruct", choices=MODES, default="liar")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--keep-hidden", action="store_true",
                   help="prune heads and FFN channels only (TP's example also prunes the hidden size)")
    args = p.parse_args(argv)
    if not 0 < args.ratio < 1:
        p.error(f"--ratio {args.ratio} must be in (0, 1)")
    if Path(args.out).exists():
        p.error(f"--out {args.out} exists; choose a new folder (liar never overwrites it here)")
    return args


def build_pruner(model, example: torch.Tensor, ratio: float, keep_hidden: bool = False):
    cfg = model.config
    num_heads, ignored = {}, [model.lm_head]
    for name, m in model.named_modules():
        if name.endswith("self_attn"):
            num_heads[m.q_proj] = cfg.num_attention_heads
            num_heads[m.k_proj] = num_heads[m.v_proj] = cfg.num_key_value_heads
    if keep_hidden:  # the residual stream's producers stop being roots: its group is never pruned
        ignored.append(model.get_input_embeddings())
        ignored += [m for name, m in model.named_modules() if name.endswith(("self_attn.o_proj", "mlp.down_proj"))]
    with traceable(model):
        return tp.pruner.BasePruner(
            model, example_inputs=example,
            importance=tp.importance.GroupMagnitudeImportance(p=2, group_reduction="mean"),
            global_pruning=False, output_transform=lambda x: x.logits, pruning_ratio=ratio,
            ignored_layers=ignored, num_heads=num_heads, prune_num_heads=True, prune_head_dims=False,
            head_pruning_ratio=ratio, round_to=math.lcm(4, cfg.num_attention_heads),
        )


def _median_errors(errors: dict[str, dict[str, float]]) -> dict[str, float] | None:
    """Median over the reconstructed linears of the relative calibration output error of each mode."""
    if not errors:
        return None
    return {mode: round(float(torch.tensor([e[mode] for e in errors.values()]).median()), 4)
            for mode in ("none", "bias", "liar")}


def run(args: argparse.Namespace) -> dict:
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    arch = architecture_for(model)
    texts, _ = corpora.resolve(args.calib, "calib", args.seed)
    ids = data.calibration_ids(tokenizer, texts, args.nsamples, args.seqlen, seed=None)
    before = sum(p.numel() for p in model.parameters())
    start = time.perf_counter()
    pruner = build_pruner(model, ids[:1, :16], args.ratio, args.keep_hidden)
    rec = TPReconstructor(model, mode=args.reconstruct, bias_allowed=bias_policy(arch))
    rec.calibrate(ids[i : i + args.batch_size] for i in range(0, ids.shape[0], args.batch_size))
    with torch.no_grad():
        for group in rec.step(pruner):
            group.prune()
    finalize_config(model, arch)
    seconds = time.perf_counter() - start
    model.save_pretrained(args.out)
    tokenizer.save_pretrained(args.out)
    cfg = model.config
    return {
        "tool": "torch-pruning", "torch_pruning_version": version("torch-pruning"), "reconstruct": args.reconstruct,
        "ratio": args.ratio, "params_before": before, "params_after": sum(p.numel() for p in model.parameters()),
        "hidden_size": cfg.hidden_size, "num_attention_heads": cfg.num_attention_heads,
        "num_key_value_heads": cfg.num_key_value_heads, "intermediate_size": cfg.intermediate_size,
        "reconstructed_linears": len(rec.errors), "calib_error_median": _median_errors(rec.errors),
        "seconds": round(seconds, 1), "out": str(args.out),
    }


def main(argv=None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    print(json.dumps(run(parse_args(argv))))
