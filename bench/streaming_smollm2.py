"""Streaming prune time over one plain forward pass, on SmolLM2-135M, dense and sequential calibration.

    python bench/streaming_smollm2.py [--nsamples 64 --seqlen 512 --backend auto --modes dense sequential]

The plain forward pass runs the decoder body (no LM head: pruning never needs logits) over the same
calibration batches. The prune is the whole CLI path (`liar.prune(folder, out)`: read, calibrate, solve,
write). Floors are FLOP counts: a block's forward, plus one triangle of each consumer Gram (D² FLOPs per
token) in dense mode; in sequential mode the teacher forward, the student's passes (liar.sequential: A up to
the attention consumer; B o_proj' on the kept channels of A's cached inputs, then the FFN producers; C down_proj'
on the kept channels of B's cached FFN inputs), and the student Gram plus Σ y x_sᵀ of the consumer targets
(D² + 2·hidden·D per token). `sequential (three passes)` is the floor of the design before pass reuse (A; B through the
pruned attention up to the FFN consumer; C through the whole pruned block).
On a shared machine other jobs' load moves every timing, so the plain forward is measured right before and
right after each prune (F1, dense, F2, sequential, F3) and each prune is divided by the mean of its two
neighbours; wall time and CPU time (the process's, every thread) are both given.
Rows go to bench/results/<--name>.{csv,md}.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch

import liar
from liar import data
from liar.io.load import load_pruned, load_tokenizer, resolve_source
from liar.report import versions

RESULTS = Path(__file__).parent / "results"


def block_flops(config, seqlen: int) -> dict[str, float]:
    """FLOPs per token of one decoder block: attention (projections + scores) and FFN."""
    h, f = config.hidden_size, config.intermediate_size
    hd = config.head_dim
    q, kv = config.num_attention_heads * hd, config.num_key_value_heads * hd
    attn = 2 * (h * q + 2 * h * kv + q * h) + 2 * 2 * q * seqlen / 2  # causal: half the score matrix
    return {"attn": attn, "ffn": 2 * 3 * h * f, "d_attn": q, "d_ffn": f}


def floors(config, seqlen: int, ratio: float) -> dict[str, float]:
    b = block_flops(config, seqlen)
    fwd = b["attn"] + b["ffn"]
    grams = b["d_attn"] ** 2 + b["d_ffn"] ** 2
    o, down = 2 * b["d_attn"] * config.hidden_size, 2 * b["d_ffn"] * config.hidden_size
    kept = 1 - ratio
    student = (b["attn"] - o) + (kept * o + b["ffn"] - down) + kept * down  # passes A, B, C
    three_passes = b["attn"] + (b["attn"] * kept + 2 * b["ffn"] / 3) + kept * fwd
    cross = 2 * config.hidden_size * (b["d_attn"] + b["d_ffn"])  # Σ y x_sᵀ: [hidden, D] per consumer
    return {"dense": (fwd + grams) / fwd, "sequential": (fwd + student + grams + cross) / fwd,
            "sequential (three passes)": (fwd + three_passes + grams + cross) / fwd}


@torch.no_grad()
def forward_seconds(source: Path, ids: torch.Tensor, batch_size: int) -> tuple[float, float]:
    """(wall, CPU) seconds of the plain forward pass."""
    model = load_pruned(source)
    body = model.get_decoder()
    body(input_ids=ids[:1, :16])  # warm-up
    began, cpu = time.perf_counter(), time.process_time()
    for i in range(0, ids.shape[0], batch_size):
        body(input_ids=ids[i : i + batch_size], use_cache=False)
    return time.perf_counter() - began, time.process_time() - cpu


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nsamples", type=int, default=64)
    p.add_argument("--seqlen", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--ratio", type=float, default=0.2)
    p.add_argument("--backend", default="auto")
    p.add_argument("--modes", nargs="+", default=["dense", "sequential"], choices=["dense", "sequential"])
    p.add_argument("--name", default="streaming_smollm2", help="results file stem in bench/results")
    args = p.parse_args()
    args.load_before = os.getloadavg()[0]
    source = resolve_source(None)
    tokenizer = load_tokenizer(source)
    ids = data.calibration_ids(tokenizer, data.imdb_texts("calib"), args.nsamples, args.seqlen, seed=0)
    forwards = [forward_seconds(source, ids, args.batch_size)]
    config = load_pruned(source).config
    floor = floors(config, args.seqlen, args.ratio)
    rows = []
    work = Path(tempfile.mkdtemp(prefix="liar-smollm2-"))
    for mode in args.modes:
        cfg = liar.PruneConfig(ratio=args.ratio, calibration=mode, nsamples=args.nsamples, seqlen=args.seqlen,
                               batch_size=args.batch_size, backend=args.backend)
        began, cpu = time.perf_counter(), time.process_time()
        report = liar.prune(source, work / mode, cfg, calibration=ids)
        total, total_cpu = time.perf_counter() - began, time.process_time() - cpu
        forwards.append(forward_seconds(source, ids, args.batch_size))
        fwd, fwd_cpu = ((a + b) / 2 for a, b in zip(*forwards[-2:], strict=True))
        stages = {k: sum(l.stages.get(k, 0.0) for l in report.layers)
                  for k in ("read", "forward", "statistics", "solve", "write")}
        rows.append({"mode": mode, "forward_s": fwd, "forward_neighbours_s": [round(f[0], 1) for f in forwards[-2:]],
                     "prune_s": total, "ratio": total / fwd,
                     "forward_cpu_s": fwd_cpu, "prune_cpu_s": total_cpu, "ratio_cpu": total_cpu / fwd_cpu,
                     "floor": floor[mode], "floor_three_passes": floor["sequential (three passes)"],
                     **{f"stage_{k}_s": v for k, v in stages.items()}, "gram_backend": report.backends["gram_update"],
                     "tokens": ids.numel(), "device": report.backends["device"], "torch": versions()["torch"],
                     "load_before": args.load_before, "load_after": os.getloadavg()[0]})
        print(rows[-1], flush=True)
    shutil.rmtree(work, ignore_errors=True)
    write(rows, args.name)


def write(rows: list[dict], name: str) -> None:
    RESULTS.mkdir(exist_ok=True)
    with (RESULTS / f"{name}.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    lines = ["| calibration | plain forward s (CPU s) | prune s (CPU s) | prune / forward: CPU (wall) | FLOP floor | "
             "read / forward / statistics / solve / write s | Gram kernel | load avg (start, end) |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['mode']} | {r['forward_s']:.1f} ({r['forward_cpu_s']:.1f}) | {r['prune_s']:.1f} "
              f"({r['prune_cpu_s']:.1f}) | **{r['ratio_cpu']:.2f}×** ({r['ratio']:.2f}×) | {r['floor']:.2f}×"
              f"{' (three passes ' + format(r['floor_three_passes'], '.2f') + '×)' if r['mode'] == 'sequential' else ''} | "
              f"{r['stage_read_s']:.1f} / {r['stage_forward_s']:.1f} / {r['stage_statistics_s']:.1f} / "
              f"{r['stage_solve_s']:.1f} / {r['stage_write_s']:.1f} | {r['gram_backend']} | "
              f"{r['load_before']:.1f}, {r['load_after']:.1f} |" for r in rows]
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
