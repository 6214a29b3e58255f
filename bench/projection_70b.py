"""Projection: streaming LIAR pruning of LLaMA-70B on one H200, stage by stage.

    python bench/projection_70b.py [--ratio 0.2 --nsamples 128 --seqlen 2048]

Counts the FLOPs and bytes of every stage of one block (read shard, host→device copy, forward, statistics,
solve, write) from the pipeline's own formulas, divides by the H200 ceilings measured in this workplace
(/work/.library/device/KINDS.md: 788 TFLOP/s bf16 matrix products, 4.3 TB/s device copies) or by stated
assumptions where no measurement exists (disk, PCIe, fp32), and prints per-block and end-to-end times.
Efficiency factors (the fraction of a ceiling a stage reaches) are assumptions too, stated in EFFICIENCY.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

# Ceilings (per second). BF16 is measured here; the rest are vendor figures or stated assumptions.
BF16_FLOPS = 788e12  # measured: 8192³ bf16 matmul through PyTorch on an H200 (KINDS.md)
FP32_FLOPS = 67e12  # H200 FP32 (non-tensor-core) vendor figure: the solves and error forms run in fp32
TF32_FLOPS = 400e12  # tf32 tensor cores (vendor, dense ~495): what the error forms would get with tf32 allowed
DISK_READ = 7e9  # NVMe (PCIe 4.0 x4) sequential read: an assumption, the lent machine's disk is not measured
DISK_WRITE = 5e9  # NVMe sequential write: an assumption
H2D = 50e9  # PCIe 5.0 x16 host→device, pinned: vendor figure

# The fraction of a ceiling each stage reaches (assumptions): GEMM-shaped work reaches ~70% in cuBLAS; the
# Gram kernels are untested on a GPU (issue 4), so 60% is their target, not a measurement; cuSOLVER potrf
# and trsm at these sizes reach about half of fp32 peak.
EFFICIENCY = {"forward": 0.7, "statistics": 0.6, "solve": 0.5, "errors": 0.5}


@dataclass(frozen=True)
class Llama70B:
    layers: int = 80
    hidden: int = 8192
    ffn: int = 28672
    heads: int = 64
    kv_heads: int = 8
    head_dim: int = 128
    vocab: int = 128256


def block_stages(m: Llama70B, ratio: float, tokens: int, seqlen: int) -> dict[str, dict[str, float]]:
    q, kv, h, f = m.heads * m.head_dim, m.kv_heads * m.head_dim, m.hidden, m.ffn
    params = h * q + 2 * h * kv + q * h + 3 * h * f
    bytes_bf16 = 2 * params
    attn_scores = 2 * 2 * q * seqlen / 2  # QKᵀ and AV per token, causal half
    forward = tokens * (2 * params + attn_scores)
    statistics = tokens * (q * q + f * f)  # one triangle of each consumer Gram: D² FLOPs per token
    kept = {"o": round((1 - ratio) * q), "down": round((1 - ratio) * f)}
    pruned = {"o": q - kept["o"], "down": f - kept["down"]}
    solve = sum(r**3 / 3 + 2 * r * r * pruned[k] + 2 * h * pruned[k] * r for k, r in kept.items())
    # errors: the dense output energy and the LIAR residual are quadratic forms dW·G·dWᵀ over full D
    errors = 2 * sum(2 * h * d * d for d in (q, f))
    return {
        "read": {"bytes": bytes_bf16, "seconds": bytes_bf16 / DISK_READ},
        "host→device": {"bytes": bytes_bf16, "seconds": bytes_bf16 / H2D},
        "forward": {"flops": forward, "seconds": forward / (BF16_FLOPS * EFFICIENCY["forward"])},
        "statistics": {"flops": statistics, "seconds": statistics / (BF16_FLOPS * EFFICIENCY["statistics"])},
        "solve": {"flops": solve, "seconds": solve / (FP32_FLOPS * EFFICIENCY["solve"])},
        "errors (fp32)": {"flops": errors, "seconds": errors / (FP32_FLOPS * EFFICIENCY["errors"])},
        "write": {"bytes": (1 - ratio) * bytes_bf16, "seconds": (1 - ratio) * bytes_bf16 / DISK_WRITE},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ratio", type=float, default=0.2)
    p.add_argument("--nsamples", type=int, default=128)
    p.add_argument("--seqlen", type=int, default=2048)
    args = p.parse_args()
    m = Llama70B()
    stages = block_stages(m, args.ratio, args.nsamples * args.seqlen, args.seqlen)
    stem = 2 * 2 * m.vocab * m.hidden  # embeddings + LM head, bf16: read once, written once
    print(f"| stage | per block | per block s | {m.layers} blocks s |\n|---|---|---|---|")
    for name, s in stages.items():
        amount = f"{s['flops'] / 1e12:.1f} TFLOP" if "flops" in s else f"{s['bytes'] / 1e9:.2f} GB"
        print(f"| {name} | {amount} | {s['seconds']:.3f} | {m.layers * s['seconds']:.0f} |")
    total = m.layers * sum(s["seconds"] for s in stages.values()) + stem / DISK_READ + stem / DISK_WRITE
    tf32 = total - m.layers * stages["errors (fp32)"]["seconds"] * (1 - FP32_FLOPS / TF32_FLOPS)
    print(f"\nend to end, stages in sequence: {total / 60:.1f} min (error forms in tf32: {tf32 / 60:.1f} min)")


if __name__ == "__main__":
    main()
