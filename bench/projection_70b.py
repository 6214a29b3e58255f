"""Projection: streaming LIAR pruning of LLaMA-70B on one H200, stage by stage, with and without overlap.

    python bench/projection_70b.py [--ratio 0.2 --nsamples 128 --seqlen 2048 --sha256 1.5e9]

Counts the FLOPs and bytes of every stage of one block (read shard, digest, host→device copy, forward,
statistics, solve, error forms, write) from the pipeline's own formulas, divides by the H200 ceilings measured
in this workplace (/work/.library/device/KINDS.md: 788 TFLOP/s bf16 matrix products) or by stated assumptions
where no measurement exists (disk, PCIe, fp32, sha256), and prints per-block and end-to-end times for dense and
sequential calibration:

- in sequence (`--no-overlap`): a block costs the sum of its stages;
- overlapped (the default, liar.driver._Blocks): a background thread reads and digests block i+1 and copies it
  to the device while block i computes, another writes block i−1, so a block costs the largest of
  (read + digest + copy), (compute + copy: the copy goes to the compute stream) and (write); the first read
  and the last write are not hidden. That the read and write waits vanish when compute dominates is measured
  on this CPU (bench/streaming_memory.py: docs/streaming.md); the stage times here are the FLOP/byte model.
Efficiency factors (the fraction of a ceiling a stage reaches) are assumptions too, stated in EFFICIENCY.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

# Ceilings (per second). BF16 is measured here; the rest are vendor figures or stated assumptions.
BF16_FLOPS = 788e12  # measured: 8192³ bf16 matmul through PyTorch on an H200 (KINDS.md)
FP32_FLOPS = 67e12  # H200 FP32 (non-tensor-core) vendor figure: the solves and error forms run in fp32
FP64_FLOPS = 67e12  # H200 FP64 tensor-core vendor figure: the sequential fit forms its right-hand side in fp64
TF32_FLOPS = 400e12  # tf32 tensor cores (vendor, dense ~495): what the error forms would get with tf32 allowed
DISK_READ = 7e9  # NVMe (PCIe 4.0 x4) sequential read: an assumption, the lent machine's disk is not measured
DISK_WRITE = 5e9  # NVMe sequential write: an assumption
H2D = 50e9  # PCIe 5.0 x16 host→device, pinned: vendor figure
SHA256 = 1.5e9  # one core with SHA-NI (OpenSSL): an assumption; this shared 2-core VM measured 0.4 GB/s under load

# The fraction of a ceiling each stage reaches (assumptions): GEMM-shaped work reaches ~70% in cuBLAS; the
# Gram kernels are untested on a GPU (issue 4), so 60% is their target, not a measurement; cuSOLVER potrf
# and trsm at these sizes reach about half of fp32 peak.
EFFICIENCY = {"forward": 0.7, "statistics": 0.6, "solve": 0.5, "errors": 0.5}
COMPUTE = ("forward", "statistics", "solve", "errors (fp32)")


@dataclass(frozen=True)
class Llama70B:
    layers: int = 80
    hidden: int = 8192
    ffn: int = 28672
    heads: int = 64
    kv_heads: int = 8
    head_dim: int = 128
    vocab: int = 128256


def block_stages(m: Llama70B, ratio: float, tokens: int, seqlen: int, sequential: bool = False,
                 sha256: float = SHA256) -> dict[str, dict[str, float]]:
    q, kv, h, f = m.heads * m.head_dim, m.kv_heads * m.head_dim, m.hidden, m.ffn
    params = h * q + 2 * h * kv + q * h + 3 * h * f
    bytes_bf16 = 2 * params
    attn_scores = 2 * 2 * q * seqlen / 2  # QKᵀ and AV per token, causal half
    per_token = 2 * params + attn_scores
    kept = {"o": round((1 - ratio) * q), "down": round((1 - ratio) * f)}
    pruned = {"o": q - kept["o"], "down": f - kept["down"]}
    grams = q * q + f * f  # one triangle of each consumer Gram: D² FLOPs per token
    if sequential:  # liar.sequential: teacher forward + student passes A, B, C; student Gram + Σ y x_sᵀ [h, D]
        ffn, o = 2 * h * 3 * f, 2 * h * q
        # A: up to o's input; B: o' on the kept channels, the FFN producers; C: down' on the kept neurons
        student = (per_token - ffn - o) + (2 * h * kept["o"] + 2 * h * 2 * f) + 2 * h * kept["down"]
        per_token, grams = per_token + student, grams + 2 * h * (q + f)
    forward, statistics = tokens * per_token, tokens * grams
    width = {"o": q, "down": f}
    if not sequential:  # liar.reconstruct: Cholesky of C_RR, Q = C_SR C_RR⁻¹, W_S Q folded into W_R
        solve = sum(r**3 / 3 + 2 * r * r * pruned[k] + 2 * h * pruned[k] * r for k, r in kept.items())
        solve_seconds = solve / (FP32_FLOPS * EFFICIENCY["solve"])
        # relative_errors: the dense output energy tr(W G Wᵀ) over the full width, tr(W_S M W_Sᵀ) for none,
        # bias and liar, and liar's residual moment from the S×S and S×R blocks
        errors = sum(2 * h * width[k] ** 2 + 3 * 2 * h * pruned[k] ** 2 + 4 * pruned[k] ** 2 * r
                     for k, r in kept.items())
    else:  # sequential_fit: C_ys[:, R] − W_R C_RR in fp64, then Cholesky and two solves with h right-hand sides
        rhs = sum(2 * h * r * r for r in kept.values())
        factor = sum(r**3 / 3 + 2 * r * r * h for r in kept.values())
        solve = rhs + factor
        solve_seconds = (rhs / FP64_FLOPS + factor / FP32_FLOPS) / EFFICIENCY["solve"]
        # sequential_error, once per mode (none, bias, liar): ⟨W', Y[:, R]⟩ and tr(W' G_RR W'ᵀ)
        errors = sum(3 * (2 * h * r + 2 * h * r * r) for r in kept.values())
    return {
        "read": {"bytes": bytes_bf16, "seconds": bytes_bf16 / DISK_READ},
        "digest": {"bytes": bytes_bf16, "seconds": bytes_bf16 / sha256},
        "host→device": {"bytes": bytes_bf16, "seconds": bytes_bf16 / H2D},
        "forward": {"flops": forward, "seconds": forward / (BF16_FLOPS * EFFICIENCY["forward"])},
        "statistics": {"flops": statistics, "seconds": statistics / (BF16_FLOPS * EFFICIENCY["statistics"])},
        "solve": {"flops": solve, "seconds": solve_seconds},
        "errors (fp32)": {"flops": errors, "seconds": errors / (FP32_FLOPS * EFFICIENCY["errors"])},
        "write": {"bytes": (1 - ratio) * bytes_bf16, "seconds": (1 - ratio) * bytes_bf16 / DISK_WRITE},
    }


def end_to_end(m: Llama70B, stages: dict[str, dict[str, float]], tf32: bool = False) -> dict[str, float]:
    """Seconds for the whole model, in sequence and overlapped (see the module docstring)."""
    sec = {k: v["seconds"] for k, v in stages.items()}
    if tf32:
        sec["errors (fp32)"] *= FP32_FLOPS / TF32_FLOPS
    stem = 2 * 2 * m.vocab * m.hidden  # embeddings + LM head, bf16: read once, written once
    stem_seconds = stem / DISK_READ + stem / DISK_WRITE
    compute = sum(sec[k] for k in COMPUTE) + sec["host→device"]
    reading = sec["read"] + sec["digest"] + sec["host→device"]
    block = max(compute, reading, sec["write"])
    return {"in sequence": m.layers * sum(sec.values()) + stem_seconds,
            "overlapped": reading + m.layers * block + sec["write"] + stem_seconds,
            "per block in sequence": sum(sec.values()), "per block overlapped": block}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ratio", type=float, default=0.2)
    p.add_argument("--nsamples", type=int, default=128)
    p.add_argument("--seqlen", type=int, default=2048)
    p.add_argument("--sha256", type=float, default=SHA256, help="digest rate, bytes/s (one core)")
    args = p.parse_args()
    m = Llama70B()
    tokens = args.nsamples * args.seqlen
    modes = {"dense": block_stages(m, args.ratio, tokens, args.seqlen, sha256=args.sha256),
             "sequential": block_stages(m, args.ratio, tokens, args.seqlen, sequential=True, sha256=args.sha256)}
    print(f"| stage | dense: per block | s | {m.layers} blocks s | sequential: per block | s | {m.layers} blocks s |")
    print("|---|---|---|---|---|---|---|")
    for name in modes["dense"]:
        cells = []
        for stages in modes.values():
            s = stages[name]
            amount = f"{s['flops'] / 1e12:.1f} TFLOP" if "flops" in s else f"{s['bytes'] / 1e9:.2f} GB"
            cells += [amount, f"{s['seconds']:.3f}", f"{m.layers * s['seconds']:.0f}"]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print()
    # Dense error forms are positive quadratic forms and run in TF32 on CUDA (liar.reconstruct._tf32); the
    # sequential ones subtract close terms and stay in fp32.
    for mode, stages, tf32 in (("dense", modes["dense"], True), ("dense, error forms in fp32", modes["dense"], False),
                               ("sequential", modes["sequential"], False)):
        t = end_to_end(m, stages, tf32)
        print(f"{mode}: per block {t['per block in sequence']:.2f} s in sequence, {t['per block overlapped']:.2f} s "
              f"overlapped; end to end {t['in sequence'] / 60:.1f} min in sequence, {t['overlapped'] / 60:.1f} min "
              "overlapped")


if __name__ == "__main__":
    main()
