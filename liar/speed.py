"""Is the pruned model faster? (`liar eval speed`, parsed in liar.commands.eval_speed) Prefill latency, decode tokens/s and peak memory of stock
transformers inference (a prefill call, then a greedy decode loop on the KV cache), for several checkpoints
side by side, each reported against the first one given.

    liar eval speed --model DENSE --model PRUNED [--batch 1] [--prompt-len 128] [--gen-len 32] [--json]

Timing: every model is loaded and run `warmup` untimed times, then the models take turns for `repeats` timed
runs each (so that a shared machine's changing load hits them alike); the medians are reported. Memory: the
peak over loading and the warm-up runs above what the process held just before (on CUDA
torch.cuda.max_memory_allocated, on CPU (Linux) the resident set's high-water mark). FLOPs per
token count 2 per weight of every nn.Linear (attention's own T-dependent products excluded), so their ratio is
what a pruned model could gain at best on matmul-bound work.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import logging
import statistics
import time
from pathlib import Path

import torch

log = logging.getLogger(__name__)


def run(args: argparse.Namespace) -> dict:
    from liar.devices import resolve_device, resolve_dtype

    _check(args)
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    loaded = [load(path, args, device, dtype) for path in args.model]
    runs = [[] for _ in loaded]
    for _ in range(args.repeats):  # round robin: a load change on a shared machine hits every model alike
        for model_runs, (_, model, prompt) in zip(runs, loaded):
            model_runs.append(generate(model, prompt, args.gen_len))
    rows = [summarize(row, model_runs, args) for (row, _, _), model_runs in zip(loaded, runs)]
    del loaded
    _release(device)
    base = rows[0]
    for row in rows:
        row["prefill_speedup"] = base["prefill_ms"] / row["prefill_ms"]
        row["decode_speedup"] = row["decode_tokens_per_s"] / base["decode_tokens_per_s"]
        row["flop_ratio"] = base["flops_per_token"] / row["flops_per_token"]
    for row in rows:
        print(f"{row['model']}: prefill {row['prefill_ms']:.1f} ms ({row['prefill_speedup']:.2f}x), decode "
              f"{row['decode_tokens_per_s']:.1f} tok/s ({row['decode_speedup']:.2f}x), FLOP ratio "
              f"{row['flop_ratio']:.2f}x, peak memory {row['peak_memory_mb']:.0f} MB")
    return {"device": str(device), "device_name": _device_name(device), "dtype": str(dtype).removeprefix("torch."),
            "threads": torch.get_num_threads(), "batch": args.batch, "prompt_len": args.prompt_len,
            "gen_len": args.gen_len, "repeats": args.repeats, "warmup": args.warmup, "torch": torch.__version__,
            "models": rows}


def _check(args: argparse.Namespace) -> None:
    for name in ("batch", "prompt_len", "gen_len", "repeats"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1; got {getattr(args, name)}")
    if args.warmup < 0:
        raise ValueError(f"--warmup must be 0 or more; got {args.warmup}")


def load(path: str, args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> tuple:
    """(row, model, prompt): the model loaded and warmed up; the row holds its size and the peak memory of
    loading it and running the warm-up (measured above what the process held before, other models included)."""
    from liar.io.load import load_pruned, resolve_source

    with PeakMemory(device) as memory:
        model = load_pruned(resolve_source(path), dtype=dtype, device=device)
        vocab = model.get_output_embeddings().weight.shape[0]
        gen = torch.Generator().manual_seed(args.seed)
        prompt = torch.randint(vocab, (args.batch, args.prompt_len), generator=gen).to(device)
        for _ in range(args.warmup):
            generate(model, prompt, args.gen_len)
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    row = {"model": str(path), "params": sum(p.numel() for p in model.parameters()), "linear_params": linear,
           "flops_per_token": 2 * linear, "peak_memory_mb": memory.peak_mb, "memory": memory.kind}
    return row, model, prompt


def summarize(row: dict, runs: list[tuple[float, float]], args: argparse.Namespace) -> dict:
    """The row with the medians of the timed (prefill, decode) runs."""
    prefill_s = statistics.median(r[0] for r in runs)
    decode_s = statistics.median(r[1] for r in runs)
    row.update(prefill_ms=prefill_s * 1e3, prefill_tokens_per_s=args.batch * args.prompt_len / prefill_s,
               decode_tokens_per_s=args.batch * args.gen_len / decode_s,
               decode_ms_per_step=decode_s / args.gen_len * 1e3)
    log.info("%s: prefill %.1f ms, decode %.1f tok/s", row["model"], row["prefill_ms"], row["decode_tokens_per_s"])
    return row


@torch.inference_mode()
def generate(model, prompt: torch.Tensor, gen_len: int) -> tuple[float, float]:
    """(prefill seconds, decode seconds): one forward pass over the prompt that fills the KV cache and picks
    the first new token, then gen_len greedy single-token steps on the cache."""
    sync = torch.cuda.synchronize if prompt.is_cuda else (lambda: None)
    sync()
    start = time.perf_counter()
    out = model(input_ids=prompt, use_cache=True)
    token = out.logits[:, -1].argmax(-1, keepdim=True)
    sync()
    prefilled = time.perf_counter()
    cache = out.cache  # transformers 5.24 names the KV cache `cache` (`past_key_values` is deprecated)
    for _ in range(gen_len):
        out = model(input_ids=token, cache=cache, use_cache=True)
        cache = out.cache
        token = out.logits[:, -1].argmax(-1, keepdim=True)
    sync()
    return prefilled - start, time.perf_counter() - prefilled


class PeakMemory:
    """Peak memory above the level at entry: the CUDA allocator's peak, or on Linux the kernel's resident-set
    high-water mark (VmHWM, reset at entry through /proc/self/clear_refs). A sampling thread was tried first:
    on this loaded 2-core machine it stalled the decode loop on the GIL (0.1 tokens/s for SmolLM2-135M)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.kind = "cuda max_memory_allocated" if device.type == "cuda" else "VmHWM above its reset at entry"
        self.peak_mb = float("nan")

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            return self
        try:
            Path("/proc/self/clear_refs").write_text("5")  # 5: reset the peak RSS to the current RSS
            self._base = _status_bytes("VmHWM")  # the same counter as at exit (VmRSS lags it by up to ~64 KiB)
        except OSError:
            self.kind, self._base = "unavailable (no writable /proc/self/clear_refs)", None
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_mb = (torch.cuda.max_memory_allocated(self.device) - self._base) / 2**20
        elif self._base is not None:
            self.peak_mb = (_status_bytes("VmHWM") - self._base) / 2**20


def _status_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024  # kB
    raise OSError(f"/proc/self/status has no {field}")


def _release(device: torch.device) -> None:
    """Give the freed model back to the system, so the next model's RSS baseline is not inflated."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        return
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "cpu"
