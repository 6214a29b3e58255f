"""Why is sequential calibration worse than dense? Held-out and in-sample perplexity of SmolLM2-135M.

    python bench/sequential_study.py --ratio 0.2

Variants (all LIAR, flap criterion, uniform allocation):
  dense           statistics of the unpruned model (the default)
  seq-teacher     the shipped sequential mode: student inputs fitted to the dense model's outputs
                  (sequential_target=output), at damping α ∈ {1e-2, 1e-1, 1}
  seq-residual    student inputs fitted to the dense residual stream less the student's
                  (sequential_target=residual: a block also repairs the drift that reaches it)
  seq-self        student inputs fitted to the block's own dense function on those inputs
                  (GPTQ-style: the same formula as dense mode, statistics from the pruned model)
In-sample perplexity is measured on the calibration tokens themselves: a variant that wins there and loses
on held-out text over-fits the calibration text. Rows go to bench/results/sequential_study.{csv,md}.
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import liar
import liar.pipeline
import liar.sequential
from liar import data
from liar.eval import perplexity
from liar.io.load import load_pruned, load_tokenizer, resolve_source
from liar.forward import generator, new_stats, run_block, sum_over_ranks
from liar.prune_layer import prune_attention, prune_ffn
from liar.report import LayerReport

RESULTS = Path(__file__).parent / "results"
SHIPPED_STEP = liar.sequential.sequential_step


def self_target_step(arch, layer, shape, budget, metas, teacher, student, config, index, new_store, as_saved):
    """Sequential statistics, dense-mode targets: each consumer is fitted to its own dense output on the
    pruned model's activations (attention first, then the FFN on the pruned attention's outputs)."""
    o, down = arch.attn_consumer(layer), arch.ffn_consumer(layer)
    stats = new_stats(arch, layer, config.backend)
    run_block(layer, metas, student, {o: stats["attn"]}, None)
    sum_over_ranks(stats["attn"])
    attn = prune_attention(arch, layer, shape, stats["attn"], budget.attn_units, config, generator(config, index, "attn"))
    run_block(layer, metas, student, {down: stats["mlp"]}, None)
    sum_over_ranks(stats["mlp"])
    mlp = prune_ffn(arch, layer, shape, stats["mlp"], budget.neurons, config, generator(config, index, "mlp"))
    as_saved(layer)
    return LayerReport(index=index, attn=attn, mlp=mlp), teacher, run_block(layer, metas, student, {}, new_store())


VARIANTS = {  # calibration, alpha, sequential step, sequential target
    "dense": ("dense", 1e-2, SHIPPED_STEP, "output"),
    "seq-teacher a=1e-2": ("sequential", 1e-2, SHIPPED_STEP, "output"),
    "seq-teacher a=1e-1": ("sequential", 1e-1, SHIPPED_STEP, "output"),
    "seq-teacher a=1": ("sequential", 1.0, SHIPPED_STEP, "output"),
    "seq-residual a=1e-2": ("sequential", 1e-2, SHIPPED_STEP, "residual"),
    "seq-residual a=1e-1": ("sequential", 1e-1, SHIPPED_STEP, "residual"),
    "seq-self": ("sequential", 1e-2, self_target_step, "output"),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ratio", type=float, default=0.2)
    p.add_argument("--nsamples", type=int, default=64)
    p.add_argument("--seqlen", type=int, default=512)
    p.add_argument("--eval-tokens", type=int, default=16384)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS))
    args = p.parse_args()
    source = resolve_source(None)
    tokenizer = load_tokenizer(source)
    heldout = data.token_stream(tokenizer, data.imdb_texts("heldout"), args.eval_tokens)
    calib = data.calibration_ids(tokenizer, data.imdb_texts("calib"), args.nsamples, args.seqlen, seed=0)
    in_sample = calib.reshape(-1)[: args.eval_tokens]
    rows = []
    for name in args.variants:
        mode, alpha, step, target = VARIANTS[name]
        liar.pipeline.sequential_step = step  # the name the pipeline calls
        model = load_pruned(source)
        config = liar.PruneConfig(ratio=args.ratio, alpha=alpha, calibration=mode, sequential_target=target,
                                  nsamples=args.nsamples, seqlen=args.seqlen)
        began = time.perf_counter()
        report = liar.prune(model, None, config, calibration=calib)
        seconds = time.perf_counter() - began
        rows.append({"variant": name, "ratio": args.ratio, "alpha": alpha,
                     "heldout_ppl": perplexity(model, heldout, seqlen=512)["ppl"],
                     "in_sample_ppl": perplexity(model, in_sample, seqlen=512)["ppl"],
                     "attn_err": report.mean_errors("attn")["liar"], "mlp_err": report.mean_errors("mlp")["liar"],
                     "prune_seconds": seconds})
        print(rows[-1], flush=True)
    liar.pipeline.sequential_step = SHIPPED_STEP
    dense = load_pruned(source)
    baseline = {"heldout": perplexity(dense, heldout, seqlen=512)["ppl"],
                "in_sample": perplexity(dense, in_sample, seqlen=512)["ppl"]}
    write(rows, baseline, args.ratio)


def write(rows: list[dict], baseline: dict, ratio: float) -> None:
    RESULTS.mkdir(exist_ok=True)
    name = f"sequential_study_r{int(ratio * 100)}"
    with (RESULTS / f"{name}.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    lines = [f"Unpruned: held-out ppl {baseline['heldout']:.2f}, in-sample ppl {baseline['in_sample']:.2f}", "",
             "| variant | held-out ppl | in-sample ppl | mean calib. error attn / mlp (own target) | prune s |",
             "|---|---|---|---|---|"]
    lines += [f"| {r['variant']} | {r['heldout_ppl']:.2f} | {r['in_sample_ppl']:.2f} | {r['attn_err']:.4f} / "
              f"{r['mlp_err']:.4f} | {r['prune_seconds']:.0f} |" for r in rows]
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
