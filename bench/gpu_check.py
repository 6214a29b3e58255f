"""One-call GPU check for a lent H200 (or any CUDA GPU): build, check every kernel, time them; under 8 minutes.

    python3 bench/gpu_check.py                 # everything; results in $OUT (or bench/results)
    python3 bench/gpu_check.py --skip-build    # liar._C already built with CUDA

Phases, each in its own process so that a faulting kernel cannot poison the next phase's CUDA context:
  build     LIAR_CUDA_ARCHS=9.0 python setup.py build_ext --inplace (CPU + CUDA kernels)
  check     each backend (torch, cuda, triton) × op × dtype × mask × shape vs a float64 reference on the GPU
  time      gram_update (bf16) for D ∈ {576 … 28672} × tokens ∈ {4096, 16384}, plus the cross-Gram: median of
            CUDA-event timings, useful TFLOP/s, % of the bf16 matrix peak, speedup over the torch reference
  tests     (time permitting) pytest tests/test_ops.py tests/test_triton_kernels.py (Triton autotuning off)
  sanitize  (time permitting) compute-sanitizer memcheck on small CUDA-kernel calls (both load paths)
Output: $OUT/phases.log, check_<backend>.json, time.json, and the summary table printed last.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = Path(os.environ.get("OUT") or ROOT / "bench" / "results")
# --dry-run (LIAR_GPU_CHECK_DRY=1 in the phases) runs the same script on CPU with tiny shapes, to test it
# without spending device time.
DRY = os.environ.get("LIAR_GPU_CHECK_DRY") == "1"
DEVICE = "cpu" if DRY else "cuda"
KERNEL_BACKENDS = ("cpp",) if DRY else ("cuda", "triton")
# bf16 dense matrix rate measured on this workplace's H200 (8192³ products through PyTorch: 769–798 TFLOP/s;
# KINDS.md); the datasheet says 989.
BF16_PEAK_TFLOPS = 790.0
CHECK_SHAPES = [(57, 100)] if DRY else [(577, 1000), (1536, 4099), (4096, 1000)]  # odd + split-K, aligned +
TIME_DIMS = (96, 200) if DRY else (576, 1536, 4096, 11008, 28672)  # split, no split (cuda kernel's paths)
TIME_TOKENS = (256,) if DRY else (4096, 16384)
CHECK_TOL = 1e-4


def log(message: str) -> None:
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {message}", flush=True)


def run(cmd: list[str], timeout: int, env: dict | None = None) -> int:
    """Run one phase; its output goes to $OUT/phases.log (at most 8 files come back from $OUT)."""
    log(f"$ {' '.join(cmd)[:300]}")
    started = time.time()
    with open(OUT / "phases.log", "a") as f:
        f.write(f"\n===== {' '.join(cmd)[:300]}\n")
        f.flush()
        try:
            code = subprocess.run(cmd, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=f, stderr=subprocess.STDOUT,
                                  timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            code = 124
    log(f"  exit {code} after {time.time() - started:.0f} s")
    return code


def include_path() -> str:
    """CUDA headers that torch includes (cusparse.h, cublas_v2.h) may live in pip's nvidia packages only."""
    import site

    dirs = []
    for base in site.getsitepackages():
        nvidia = Path(base) / "nvidia"
        if nvidia.is_dir():
            dirs += [str(p) for p in sorted(nvidia.glob("*/include")) if p.is_dir()]
    return os.pathsep.join(dirs + [os.environ.get("CPATH", "")]).strip(os.pathsep)


def build() -> int:
    env = {"LIAR_CUDA_ARCHS": "9.0", "MAX_JOBS": str(os.cpu_count() or 8), "CPATH": include_path()}
    return run([sys.executable, "setup.py", "build_ext", "--inplace"], timeout=420, env=env)


def check_backend(backend: str) -> list[dict]:
    """Relative errors of one backend vs float64 on the GPU; accumulators start non-zero."""
    import torch

    from liar import ops

    rows = []
    for (D, T), dtype, masked, op in [(s, d, m, o) for s in CHECK_SHAPES for d in (torch.bfloat16, torch.float16,
                                      torch.float32) for m in (False, True) for o in ("gram_update", "gram_update_cross")]:
        g = torch.Generator(device=DEVICE).manual_seed(D + T)
        x = (torch.randn(T, D, device=DEVICE, generator=g) * 2 + 0.3).to(dtype)
        xt = (torch.randn(T, D // 3 + 1, device=DEVICE, generator=g) - 0.2).to(dtype)
        mask = torch.rand(T, device=DEVICE, generator=g) > 0.3 if masked else None
        G, s = torch.rand(D, D, device=DEVICE, generator=g), torch.rand(D, device=DEVICE, generator=g)
        G_ts, s_t = torch.ones(xt.shape[1], D, device=DEVICE), torch.ones(xt.shape[1], device=DEVICE)
        G0, s0 = G.double(), s.double()
        keep = mask if masked else slice(None)
        x64, xt64 = x.double()[keep], xt.double()[keep]
        if op == "gram_update":
            ops.gram_update(G, s, x, mask, backend=backend)
            pairs = [(G.double().triu(), (G0 + x64.T @ x64).triu()), (s.double(), s0 + x64.sum(0))]
        else:
            ops.gram_update_cross(G, G_ts, s, s_t, x, xt, mask, backend=backend)
            pairs = [(G.double().triu(), (G0 + x64.T @ x64).triu()), (G_ts.double(), 1 + xt64.T @ x64),
                     (s.double(), s0 + x64.sum(0)), (s_t.double(), 1 + xt64.sum(0))]
        sync()
        err = max(float((a - b).norm() / b.norm()) for a, b in pairs)
        finite = all(bool(torch.isfinite(a).all()) for a, _ in pairs)
        rows.append({"backend": backend, "op": op, "D": D, "tokens": T, "dtype": str(dtype).split(".")[-1],
                     "masked": masked, "rel_err": err, "ok": finite and err < CHECK_TOL})
    return rows


def time_backends(backends: list[str], out: Path) -> None:
    """Times every case (torch reference first) and rewrites `out` after each row."""
    import torch

    from bench.bench_gram import ExperimentConfig, _inputs, useful_flops
    from liar.ops.backends import BACKENDS

    cases = [("gram_update", D, T) for D in TIME_DIMS for T in TIME_TOKENS]
    cases += [("gram_update_cross", D, TIME_TOKENS[-1]) for D in TIME_DIMS[1:3]]
    rows = []
    for op, D, T in cases:
        args = _inputs(ExperimentConfig(op, "torch", D, T, "bfloat16", DEVICE))  # shared: timing only
        ref_ms = None
        for backend in ["torch", *backends]:
            kernel = BACKENDS[backend].kernels[op]
            ms = median_ms(lambda: kernel(*args))
            ref_ms = ms if ref_ms is None else ref_ms
            tflops = useful_flops(op, D, T) / ms / 1e9
            rows.append({"op": op, "backend": backend, "D": D, "tokens": T, "dtype": "bfloat16", "median_ms": ms,
                         "useful_tflops": tflops, "pct_bf16_peak": 100 * tflops / BF16_PEAK_TFLOPS,
                         "speedup": ref_ms / ms})
            out.write_text(json.dumps(rows, indent=1))
            log(f"  {op} {backend} D={D} T={T}: {ms:.3f} ms, {tflops:.0f} TFLOP/s, {ref_ms / ms:.2f}x")
        del args
        if DEVICE == "cuda":
            torch.cuda.empty_cache()


def sync() -> None:
    import torch

    if DEVICE == "cuda":
        torch.cuda.synchronize()


def median_ms(fn, warmup: int = 2, reps: int = 15, budget_ms: float = 4000.0) -> float:
    """Median of CUDA-event timings (host clock on a dry run)."""
    import statistics

    import torch

    if DEVICE == "cpu":
        from bench.common import median_seconds

        return 1e3 * median_seconds(fn, "cpu", warmup=warmup, reps=3)
    for _ in range(warmup):  # the first call also runs Triton's autotuning for this shape
        fn()
    times = []
    while len(times) < reps and (len(times) < 3 or sum(times) < budget_ms):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


SANITIZE_SNIPPET = """
import torch
from liar import _ext
for D in (577, 264):  # odd width: element loads; multiple of 8: cp.async loads
    x = torch.randn(300, D, device="cuda", dtype=torch.bfloat16)
    m = torch.rand(300, device="cuda") > 0.5
    G, s = torch.zeros(D, D, device="cuda"), torch.zeros(D, device="cuda")
    _ext.ext.gram_update_cuda(G, s, x, m)
    xt = torch.randn(300, 40, device="cuda", dtype=torch.bfloat16)
    _ext.ext.gram_update_cross_cuda(G, torch.zeros(40, D, device="cuda"), s, torch.zeros(40, device="cuda"), x, xt, m)
torch.cuda.synchronize()
print("sanitize ok")
"""


def phase(name: str, args: list[str], timeout: int, env: dict | None = None) -> int:
    return run([sys.executable, str(Path(__file__).resolve()), "--phase", name, *args], timeout, env)


def orchestrate(args) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    started = time.time()
    log(f"OUT={OUT}")
    if shutil.which("nvidia-smi"):
        subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,clocks.sm,clocks.max.sm,driver_version",
                        "--format=csv"], check=False)
    if not (args.skip_build or DRY) and build() != 0:
        log("build failed: see build.log")
        sys.exit(1)
    for backend in ("torch", *KERNEL_BACKENDS):
        phase("check", ["--backend", backend], timeout=180, env={"LIAR_TRITON_AUTOTUNE": "0"})
    phase("time", [], timeout=240)  # writes time.json row by row: a timeout keeps what was measured
    # Whatever time is left of the 8 minutes goes to the test suite and the memory checker.
    if time.time() - started < 330 and not DRY:
        run([sys.executable, "-m", "pytest", "-q", "tests/test_ops.py", "tests/test_triton_kernels.py"],
            timeout=int(420 - (time.time() - started)), env={"LIAR_TRITON_AUTOTUNE": "0"})
    if shutil.which("compute-sanitizer") and time.time() - started < 400 and not DRY:
        run(["compute-sanitizer", "--tool", "memcheck", "--error-exitcode", "3", sys.executable, "-c",
             SANITIZE_SNIPPET], timeout=int(470 - (time.time() - started)))
    summarize()
    log(f"done in {time.time() - started:.0f} s")


def summarize() -> None:
    from bench.common import table

    checks = []
    for backend in ("torch", *KERNEL_BACKENDS):
        path = OUT / f"check_{backend}.json"
        checks += json.loads(path.read_text()) if path.exists() else [{"backend": backend, "ok": "missing"}]
    bad = [c for c in checks if c.get("ok") is not True]
    print(f"\nCHECK: {len(checks) - len(bad)}/{len(checks)} passed")
    for c in bad[:20]:
        print("  FAIL", c)
    timing = OUT / "time.json"
    if timing.exists():
        rows = json.loads(timing.read_text())
        print(f"\nTIMING on {DEVICE} (bf16, useful FLOPs = one triangle; peak = {BF16_PEAK_TFLOPS:.0f} TFLOP/s)")
        print(table(rows, [("op", ""), ("backend", ""), ("D", ""), ("tokens", ""), ("median_ms", ".3f"),
                           ("useful_tflops", ".0f"), ("pct_bf16_peak", ".0f"), ("speedup", ".2f")]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--phase", choices=("check", "time"))
    parser.add_argument("--backend", default="torch")
    parser.add_argument("--skip-build", action="store_true")
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny shapes, no build: test this script")
    args = parser.parse_args()
    if args.dry_run:
        os.environ["LIAR_GPU_CHECK_DRY"] = "1"
        os.execv(sys.executable, [sys.executable, *[a for a in sys.argv if a != "--dry-run"]])
    sys.path.insert(0, str(ROOT))
    if args.phase is None:
        orchestrate(args)
        return
    from liar.ops.backends import BACKENDS

    log(f"backends: { {n: b.error for n, b in BACKENDS.items()} }")
    if args.phase == "check":
        backend = BACKENDS[args.backend]
        rows = check_backend(args.backend) if backend.available else [
            {"backend": args.backend, "ok": False, "error": backend.error}]
        (OUT / f"check_{args.backend}.json").write_text(json.dumps(rows, indent=1))
    else:
        time_backends([n for n in KERNEL_BACKENDS if BACKENDS[n].available and _passed(n)], OUT / "time.json")


def _passed(backend: str) -> bool:
    path = OUT / f"check_{backend}.json"
    return path.exists() and all(r["ok"] for r in json.loads(path.read_text()))


if __name__ == "__main__":
    main()
