"""Shared benchmark plumbing: median timing, run metadata (device, versions, commit), result files, tables."""

from __future__ import annotations

import csv
import dataclasses
import json
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def median_seconds(fn: Callable[[], object], device: str, *, warmup: int = 1, reps: int = 5,
                   budget_s: float = 20.0) -> float:
    """Median wall time of fn() after `warmup` calls; fewer repetitions (at least 3) when one call is slow."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    while len(times) < reps:
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
        if len(times) >= 3 and sum(times) > budget_s:
            break
    return statistics.median(times)


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).parent, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, cwd=Path(__file__).parent, timeout=10).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "") if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name()
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name} ({torch.get_num_threads()} threads)"


def metadata(device: str) -> dict[str, str]:
    import liar
    from liar import _ext

    meta = {"device": device, "device_name": device_name(device), "torch": torch.__version__,
            "liar": liar.__version__, "commit": git_commit(), "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S")}
    if _ext.HAS_EXT and device == "cpu":
        meta["cpu_isa"] = _ext.ext.cpu_isa()
    try:
        import triton

        meta["triton"] = triton.__version__
    except ImportError:
        pass
    return meta


def write_results(name: str, rows: list, meta: dict[str, str], out_dir: Path = RESULTS) -> tuple[Path, Path]:
    """rows: dataclass instances. Writes <name>_<device>_<time>.csv (rows + metadata columns) and .json."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{name}_{meta['device']}_{meta['timestamp'].replace(':', '').replace('-', '')}"
    records = [{**flatten(r), **meta} for r in rows]
    csv_path, json_path = out_dir / f"{stem}.csv", out_dir / f"{stem}.json"
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(records[0]) if records else list(meta))
        writer.writeheader()
        writer.writerows(records)
    json_path.write_text(json.dumps({"meta": meta, "rows": [flatten(r) for r in rows]}, indent=1))
    return csv_path, json_path


def flatten(row) -> dict:
    """A result dataclass (possibly holding a config dataclass) as one flat dict."""
    out = {}
    for key, value in dataclasses.asdict(row).items():
        out.update(value if isinstance(value, dict) else {key: value})
    return out


def table(rows: list[dict], columns: list[tuple[str, str]]) -> str:
    """A plain-text table; columns: (key, format spec)."""
    cells = [[format(r[k], f) if f else str(r[k]) for k, f in columns] for r in rows]
    heads = [k for k, _ in columns]
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(heads)]
    line = lambda vals: "  ".join(v.rjust(w) for v, w in zip(vals, widths))  # noqa: E731
    return "\n".join([line(heads), line(["-" * w for w in widths]), *map(line, cells)])
