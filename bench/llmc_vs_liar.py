"""llm-compressor's LIARPruningModifier vs `liar.prune` on SmolLM2-135M, same settings and calibration ids.

Run in llm-compressor's environment (scripts/ci_llmcompressor.sh builds it):
    OMP_NUM_THREADS=1 /work/venvs/llmc/bin/python bench/llmc_vs_liar.py --ratio 0.2 --nsamples 16 --seqlen 256
Writes out/llmc/smollm2-r{ratio}-{llmc,liar}/ and prints one JSON line: kept units equal?, max weight
difference relative to each tensor's scale, wall times. Score both folders with `liar eval ppl --model DIR --json`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import torch
from datasets import Dataset
from llmcompressor import oneshot
from transformers import AutoModelForCausalLM, AutoTokenizer

import liar
from liar import data
from liar.integrations.llmcompressor import LIARPruningModifier
from liar.io.load import resolve_source


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--ratio", type=float, default=0.2)
    p.add_argument("--nsamples", type=int, default=16)
    p.add_argument("--seqlen", type=int, default=256)
    p.add_argument("--out", default="out/llmc")
    args = p.parse_args()
    source = resolve_source(None)
    tok = AutoTokenizer.from_pretrained(source)
    # the ids `liar prune` draws by default: embedded IMDB calibration split, seed 0
    ids = data.calibration_ids(tok, data.imdb_texts("calib"), args.nsamples, args.seqlen, 0)
    outs = {k: Path(args.out) / f"smollm2-r{args.ratio}-{k}" for k in ("llmc", "liar")}
    for o in outs.values():
        shutil.rmtree(o, ignore_errors=True)

    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    ds = Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": torch.ones_like(ids).tolist()})
    mod = LIARPruningModifier(ratio=args.ratio)
    t0 = time.perf_counter()
    oneshot(model=model, dataset=ds, recipe=[mod], pipeline="sequential", propagate_error=False,
            num_calibration_samples=args.nsamples, max_seq_length=args.seqlen, processor=tok, batch_size=1)
    t_llmc = time.perf_counter() - t0
    model.save_pretrained(outs["llmc"])
    tok.save_pretrained(outs["llmc"])

    t0 = time.perf_counter()
    report = liar.prune(source, outs["liar"], liar.PruneConfig(ratio=args.ratio, nsamples=args.nsamples,
                                                               seqlen=args.seqlen))
    t_liar = time.perf_counter() - t0
    same_units = all((mod.kept_units[i]["heads"], mod.kept_units[i]["neurons"]) == (l.attn.kept, l.mlp.kept)
                     for i, l in enumerate(report.layers))
    ref = liar.load_pruned(outs["liar"]).state_dict()
    got = model.state_dict()
    worst = max(float((got[k] - ref[k]).abs().max() / ref[k].abs().max().clamp_min(1e-30)) for k in ref)
    print(json.dumps({"ratio": args.ratio, "nsamples": args.nsamples, "seqlen": args.seqlen,
                      "same_kept_units": same_units, "same_keys": got.keys() == ref.keys(),
                      "max_rel_weight_diff": worst, "params": sum(v.numel() for v in got.values()),
                      "seconds_llmc": round(t_llmc, 1), "seconds_liar": round(t_liar, 1)}))


if __name__ == "__main__":
    main()
