"""Inference speed of dense and pruned checkpoints side by side (`liar eval speed`), saved with the run's metadata.

    python -m bench.inference_speed --model ~/.cache/liar/models/<SmolLM2> --model out/r20 --model out/r50

Takes `liar eval speed`'s options (--batch, --prompt-len, --gen-len, --repeats, --warmup, --device, --dtype);
every model is measured in the same run and its speedups are against the first one. Writes
results/inference_speed_<device>_<time>.csv/.json.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

from bench.common import metadata, table, write_results
from liar import speed
from liar.commands import eval_speed


@dataclass(frozen=True)
class Row:
    model: str
    params: int
    flop_ratio: float
    prefill_ms: float
    prefill_speedup: float
    decode_tokens_per_s: float
    decode_speedup: float
    peak_memory_mb: float
    batch: int
    prompt_len: int
    gen_len: int
    dtype: str
    threads: int


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    eval_speed.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["speed", *(sys.argv[1:] if argv is None else argv)])
    result = speed.run(args)
    rows = [Row(m["model"], m["params"], m["flop_ratio"], m["prefill_ms"], m["prefill_speedup"],
                m["decode_tokens_per_s"], m["decode_speedup"], m["peak_memory_mb"], result["batch"],
                result["prompt_len"], result["gen_len"], result["dtype"], result["threads"])
            for m in result["models"]]
    columns = [("model", ""), ("params", ""), ("flop_ratio", ".2f"), ("prefill_ms", ".1f"), ("prefill_speedup", ".2f"),
               ("decode_tokens_per_s", ".1f"), ("decode_speedup", ".2f"), ("peak_memory_mb", ".0f")]
    print(table([r.__dict__ for r in rows], columns))
    csv_path, _ = write_results("inference_speed", rows, metadata(result["device"]))
    print(f"# results: {csv_path}")


if __name__ == "__main__":
    main()
