"""Streaming pruning: peak memory and time against depth, and a checkpoint larger than the memory allowed.

    python bench/streaming_memory.py depth --layers 8 16 32          # hidden 1024, FFN 2816
    python bench/streaming_memory.py over-budget --limit 1.5GiB      # hidden 2048, FFN 5632, 24 layers
    ... --no-overlap                                                 # blocks read and written in the foreground

Each run is a fresh child process that reports its own resident memory. It first prunes a tiny copy of
the same architecture (so library code and modules are paged in), takes that as the baseline, resets the
kernel's peak counter (/proc/self/clear_refs) and then prunes the real checkpoint: the memory the
pipeline itself needs is peak − baseline, compared with its budget: the largest resident piece (the blocks held at once —
three with overlapped reads and writes: one read ahead, one computing, one being written — or the stem while the
first inputs are captured) + the calibration activations + one block's statistics, plus 30%. Each row also gives the
seconds the main thread waited for reads and writes, and the seconds background threads spent on them meanwhile.
The over-budget run is confined to a memory cgroup (v1) whose limit is a third of the checkpoint or less.
Results go to bench/results/streaming_memory.{csv,md}.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
CGROUP = Path("/sys/fs/cgroup/memory/liar-bench")
SLACK = 1.3


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _warm_up(work: Path) -> None:
    """Page in the code paths (libraries, kernels, modules) with a tiny checkpoint of the same family."""
    import torch

    import liar
    from synthetic import write_checkpoint

    tiny = write_checkpoint(work / "warm-up", hidden=64, ffn=128, layers=2, heads=4, kv_heads=2, vocab=256)
    liar.prune(tiny, work / "warm-up-out", liar.PruneConfig(ratio=0.2, nsamples=4, seqlen=32, overwrite=True),
               calibration=torch.randint(0, 256, (4, 32)))


def child(args: argparse.Namespace) -> None:
    import gc

    import torch

    import liar
    from liar.activations import activation_bytes
    from liar.io.load import read_config

    _warm_up(args.out.parent)
    gc.collect()
    baseline = _status("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    config, _ = read_config(args.model)
    ids = torch.randint(0, config.vocab_size, (args.nsamples, args.seqlen), generator=torch.Generator().manual_seed(0))
    started = time.perf_counter()
    report = liar.prune(args.model, args.out, liar.PruneConfig(ratio=0.2, nsamples=args.nsamples, seqlen=args.seqlen,
                                                                overwrite=True, overlap=not args.no_overlap),
                        calibration=ids)
    seconds = time.perf_counter() - started
    stages = report.stage_seconds()
    hidden = {k: sum(l.overlapped.get(k, 0.0) for l in report.layers) for k in ("read", "write")}
    h, f, L = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    block = report.model["block_params_before"] // L * 4
    stem = (report.model["params_before"] - report.model["block_params_before"]) * 4
    head = config.vocab_size * h * 4 * (0 if config.tie_word_embeddings else 1)  # never materialized
    acts = activation_bytes(ids.numel(), h, f, torch.float32, sequential=False)
    stats = (config.num_attention_heads * (h // config.num_attention_heads)) ** 2 * 4 + f * f * 4
    print(json.dumps({"layers": L, "overlap": not args.no_overlap, "baseline": baseline, "peak": _status("VmHWM"),
                      "seconds": seconds, "blocks_seconds": report.timings["blocks"],
                      "read_waited": stages["read"], "write_waited": stages["write"],
                      "read_background": hidden["read"], "write_background": hidden["write"],
                      "block_bytes": block, "stem_bytes": stem - head, "act_bytes": acts, "stats_bytes": stats,
                      "backend": report.backends.get("gram_update")}))


def run_child(model: Path, out: Path, nsamples: int, seqlen: int, no_overlap: bool, cgroup: Path | None = None
              ) -> dict:
    def enter_cgroup():
        if cgroup is not None:
            (cgroup / "cgroup.procs").write_text(str(os.getpid()))

    cmd = [sys.executable, __file__, "child", "--model", str(model), "--out", str(out),
           "--nsamples", str(nsamples), "--seqlen", str(seqlen)] + (["--no-overlap"] if no_overlap else [])
    done = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=enter_cgroup)
    if done.returncode != 0:
        raise RuntimeError(f"child failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _row(result: dict, checkpoint: Path) -> dict:
    need = result["peak"] - result["baseline"]
    held = (3 if result["overlap"] else 1) * result["block_bytes"]
    budget = max(held, result["stem_bytes"]) + result["act_bytes"] + result["stats_bytes"]
    size = sum(p.stat().st_size for p in checkpoint.glob("*.safetensors"))
    return {**result, "checkpoint_bytes": size, "pipeline_bytes": need, "budget_bytes": budget,
            "within_budget": need <= SLACK * budget}


def _write(rows: list[dict], name: str) -> None:
    RESULTS.mkdir(exist_ok=True)
    with (RESULTS / f"{name}.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    mib = lambda b: f"{b / 2**20:.0f}"  # noqa: E731
    lines = ["| layers | overlap | checkpoint MiB | peak RSS MiB | baseline MiB | pipeline MiB | budget MiB (×1.3) | "
             "time s | blocks s | read / write waited s | in background s |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['layers']} | {'on' if r['overlap'] else 'off'} | {mib(r['checkpoint_bytes'])} | {mib(r['peak'])} | "
              f"{mib(r['baseline'])} | {mib(r['pipeline_bytes'])} | {mib(r['budget_bytes'])} "
              f"({mib(SLACK * r['budget_bytes'])}) | {r['seconds']:.1f} | {r['blocks_seconds']:.1f} | "
              f"{r['read_waited']:.2f} / {r['write_waited']:.2f} | {r['read_background']:.2f} / "
              f"{r['write_background']:.2f} |" for r in rows]
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def depth(args: argparse.Namespace) -> None:
    from synthetic import write_checkpoint

    rows = []
    for layers in args.layers:
        ckpt = args.work / f"llama-1024x{layers}"
        if not (ckpt / "config.json").exists():
            write_checkpoint(ckpt, hidden=1024, ffn=2816, layers=layers)
        result = run_child(ckpt, args.work / f"out-{layers}", args.nsamples, args.seqlen, args.no_overlap)
        rows.append(_row(result, ckpt))
        _write(rows, "streaming_memory_depth" + ("_no_overlap" if args.no_overlap else ""))


def over_budget(args: argparse.Namespace) -> None:
    from liar.activations import parse_bytes
    from synthetic import write_checkpoint

    ckpt = args.work / "llama-2048x24"
    if not (ckpt / "config.json").exists():
        write_checkpoint(ckpt, hidden=2048, ffn=5632, layers=24, heads=16, kv_heads=8)
    limit = parse_bytes(args.limit)
    CGROUP.mkdir(exist_ok=True)
    (CGROUP / "memory.limit_in_bytes").write_text(str(limit))
    (CGROUP / "memory.max_usage_in_bytes").write_text("0")
    result = run_child(ckpt, args.work / "out-over", args.nsamples, args.seqlen, args.no_overlap, cgroup=CGROUP)
    row = _row(result, ckpt)
    row.update(limit_bytes=limit, cgroup_max_usage=int((CGROUP / "memory.max_usage_in_bytes").read_text()),
               cgroup_failcnt=int((CGROUP / "memory.failcnt").read_text()),
               checkpoint_over_limit=row["checkpoint_bytes"] / limit)
    _write([row], "streaming_memory_over_budget")
    print(json.dumps(row, indent=1))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="mode", required=True)
    c = sub.add_parser("child")
    c.add_argument("--model", type=Path, required=True)
    c.add_argument("--out", type=Path, required=True)
    c.add_argument("--no-overlap", action="store_true")
    for name, mode in (("depth", depth), ("over-budget", over_budget)):
        s = sub.add_parser(name)
        s.add_argument("--work", type=Path, default=Path("/tmp/liar-bench"))
        s.set_defaults(run=mode)
    sub.choices["depth"].add_argument("--layers", type=int, nargs="+", default=[8, 16, 32])
    sub.choices["over-budget"].add_argument("--limit", default="1.5GiB")
    for s in sub.choices.values():
        s.add_argument("--nsamples", type=int, default=32)
        s.add_argument("--seqlen", type=int, default=256)
        if s is not c:
            s.add_argument("--no-overlap", action="store_true",
                           help="read and write blocks in the foreground (liar prune --no-overlap)")
    args = p.parse_args()
    if args.mode == "child":
        child(args)
    else:
        args.work.mkdir(parents=True, exist_ok=True)
        args.run(args)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    main()
