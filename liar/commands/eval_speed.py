"""`liar eval speed`: prefill latency, decode tokens/s and peak memory of several checkpoints side by side
(the measurement lives in liar.speed, imported only when the command runs)."""

from __future__ import annotations

import argparse

from liar import config as cfg


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("speed", help="prefill latency, decode tokens/s and peak memory, models side by side")
    p.add_argument("--model", action="append", required=True,
                   help="model folder (repeat for several; the first is the baseline of the speedups)")
    p.add_argument("--batch", type=int, default=1, help="sequences per forward pass")
    p.add_argument("--prompt-len", type=int, default=128, help="prompt tokens per sequence (prefill)")
    p.add_argument("--gen-len", type=int, default=32, help="decode steps (one new token per sequence each)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per model; medians are reported")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs per model first")
    p.add_argument("--device", default="auto", choices=cfg.DEVICES)
    p.add_argument("--dtype", default="auto", choices=cfg.DTYPES)
    p.add_argument("--seed", type=int, default=0, help="seed of the random prompt token ids")
    p.add_argument("--json", action="store_true", help="print a JSON object on the last line")
    return p


def run(args: argparse.Namespace) -> dict:
    from liar import speed

    return speed.run(args)
