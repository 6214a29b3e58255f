"""PruneConfig: the one validated configuration of a pruning run (the CLI mirrors it field for field)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from liar.activations import parse_bytes

CRITERIA = ("magnitude", "wanda", "flap", "random")
RECONSTRUCTIONS = ("liar", "bias", "none")
ALLOCATIONS = ("uniform", "global")
GQA_MODES = ("per-group", "whole-groups")
CALIBRATION_MODES = ("dense", "sequential")
OFFLOADS = ("none", "cpu", "disk")
DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "float32", "bfloat16", "float16")
SOLVE_DTYPES = ("float32", "float64")
BACKENDS = ("auto", "torch", "cpp", "triton", "cuda")


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not supported; choose one of {', '.join(allowed)}")


@dataclass(frozen=True)
class PruneConfig:
    """Everything that decides what a pruning run does.

    ratio: fraction of the attention + FFN block parameters to remove, in (0, 1).
    criterion: how channels are scored (magnitude, wanda = |W|·‖x‖, flap = var(x)·‖W_col‖², random).
    reconstruct: liar (least-squares interpolation), bias (FLAP mean compensation) or none (plain slicing).
    allocation: uniform (the same ratio in every layer) or global (one ranking across layers).
    gqa: per-group (same number of query heads kept in every KV group) or whole-groups (drop KV groups).
    intercept: fold the interpolation intercept into a bias; False = the bias-free variant.
    alpha: damping, λ = alpha · mean(diag C_RR).
    min_keep: the least fraction of heads (KV groups) and of neurons any layer keeps (at least one unit).
    calib: a text file (.txt/.jsonl/.csv) for calibration; None = the embedded IMDB reviews.
    calibration: dense (statistics of the unpruned model) or sequential (inputs of the already-pruned model
        fitted to the dense model's outputs through the teacher–student cross-Gram).
    offload: where calibration activations wait between blocks: none (compute device), cpu, disk;
        max_memory (e.g. "8GiB") spills them to disk when they would exceed it.
    expert_ratio: mixture of experts only: the fraction of each layer's experts removed whole (lowest routed
        frequency × output energy first), on top of `ratio`'s heads and per-expert neurons.
    """

    ratio: float = 0.2
    criterion: str = "flap"
    reconstruct: str = "liar"
    allocation: str = "uniform"
    gqa: str = "per-group"
    intercept: bool = True
    alpha: float = 1e-2
    solve_dtype: str = "float32"
    min_keep: float = 0.1
    calib: str | None = None
    nsamples: int = 64
    seqlen: int = 512
    batch_size: int = 8
    calibration: str = "dense"
    offload: str = "none"
    max_memory: str | None = None
    seed: int = 0
    device: str = "auto"
    dtype: str = "auto"
    backend: str = "auto"
    overwrite: bool = False
    expert_ratio: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 < self.ratio < 1.0:
            raise ValueError(f"ratio={self.ratio} is outside (0, 1): it is the fraction of block parameters removed")
        _choice("criterion", self.criterion, CRITERIA)
        _choice("reconstruct", self.reconstruct, RECONSTRUCTIONS)
        _choice("allocation", self.allocation, ALLOCATIONS)
        _choice("gqa", self.gqa, GQA_MODES)
        _choice("calibration", self.calibration, CALIBRATION_MODES)
        _choice("offload", self.offload, OFFLOADS)
        _choice("device", self.device, DEVICES)
        _choice("dtype", self.dtype, DTYPES)
        _choice("solve_dtype", self.solve_dtype, SOLVE_DTYPES)
        _choice("backend", self.backend, BACKENDS)
        if self.alpha < 0:
            raise ValueError(f"alpha={self.alpha} must be >= 0 (the damping is alpha · mean(diag C_RR))")
        if not 0.0 <= self.min_keep < 1.0:
            raise ValueError(f"min_keep={self.min_keep} must be in [0, 1)")
        for name in ("nsamples", "seqlen", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be a positive integer")
        if self.max_memory is not None:
            parse_bytes(self.max_memory)
        if not 0.0 <= self.expert_ratio < 1.0:
            raise ValueError(f"expert_ratio={self.expert_ratio} must be in [0, 1): the fraction of experts removed")
        if self.reconstruct == "bias" and not self.intercept:
            raise ValueError("reconstruct='bias' adds a bias by definition; drop --no-bias or use reconstruct='liar'")

    def replace(self, **changes) -> PruneConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
