"""PruneConfig: the one validated configuration of a pruning run (the CLI mirrors it field for field)."""

from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import dataclass, field

from liar.bytesize import parse_bytes

CRITERIA = ("magnitude", "wanda", "flap", "random")
RECONSTRUCTIONS = ("liar", "bias", "none")
SELECTIONS = ("criterion", "reconstruction")
ALLOCATIONS = ("uniform", "depth", "error", "global")
GQA_MODES = ("per-group", "whole-groups")
CALIBRATION_MODES = ("dense", "sequential")
SEQUENTIAL_TARGETS = ("output", "residual")
CORPORA = ("imdb", "wiki", "sciq", "mix")  # named calibration / evaluation texts (liar.corpora)
OFFLOADS = ("none", "cpu", "disk")
DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "float32", "bfloat16", "float16")
SOLVE_DTYPES = ("float32", "float64")
BACKENDS = ("auto", "torch", "cpp", "triton", "cuda")


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not supported; choose one of {', '.join(allowed)}")


def number_or_auto(text: str) -> float | str:
    """A command-line damping: 'auto' or a number (validated by PruneConfig)."""
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a number nor 'auto'") from None


GROUPS = ("what to prune", "how to reconstruct", "calibration", "resources", "output")


def option(default, help: str, group: str, choices: tuple[str, ...] | None = None, *, default_text: str | None = None,
           flag: str | None = None, metavar: str | None = None, parse=None):
    """A PruneConfig field with its command-line description: the one source of `liar prune --help`.

    default_text: how --help names a None default; flag: a boolean's switch (it flips the default);
    metavar: the value's name in --help (default: the field's name); parse: how the command line's text becomes
    the value (default: the default's type)."""
    if group not in GROUPS:
        raise ValueError(f"group={group!r}; choose one of {GROUPS}")
    meta = {"help": help, "group": group, "choices": choices, "default_text": default_text, "flag": flag,
            "metavar": metavar, "parse": parse}
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class PruneConfig:
    """Everything that decides what a pruning run does (each field's help text is in its metadata)."""

    ratio: float = option(0.2, "fraction of the attention + FFN block parameters to remove, in (0, 1) "
                          "(embeddings, norms and the LM head are kept)", "what to prune")
    criterion: str = option("flap", "how channels are scored: magnitude ‖W_col‖, wanda |W|·‖x‖, "
                            "flap var(x)·‖W_col‖², random", "what to prune", CRITERIA)
    selection: str = option("criterion", "criterion: keep the highest-scoring channels; reconstruction: remove, "
                            "step by step, the units LIAR rebuilds best from the others (exact error per step; "
                            "needs --reconstruct liar)", "what to prune", SELECTIONS)
    reconstruct: str = option("liar", "liar: least-squares interpolation of the pruned channels; bias: FLAP mean "
                              "compensation; none: plain slicing", "how to reconstruct", RECONSTRUCTIONS)
    allocation: str = option("uniform", "uniform: the same ratio in every layer; depth: half the ratio at the first "
                             "layer rising to 1.5x at the last; error: each module's LIAR error "
                             "curve decides its share (needs a scoring pass); global: FLAP's one criterion ranking "
                             "across layers (a scoring pass); non-uniform outputs load with liar.load_pruned", "what to prune",
                             ALLOCATIONS)
    gqa: str = option("per-group", "per-group: the same number of query heads kept in every KV group; "
                      "whole-groups: drop KV groups with their query heads", "what to prune", GQA_MODES)
    intercept: bool = option(True, "bias-free variant: do not fold the interpolation intercept into a bias",
                             "how to reconstruct", flag="--no-bias")
    alpha: float | str = option(1e-2, "damping of the solve, λ = alpha · mean(diag C_RR); auto: chosen per consumer "
                                "from 1e-4..1 by 2-fold cross-validation on the calibration batches (dense "
                                "calibration, at least two batches)", "how to reconstruct", parse=number_or_auto)
    solve_dtype: str = option("float32", "precision of the least-squares solves", "how to reconstruct",
                              SOLVE_DTYPES)
    min_keep: float = option(0.1, "the least fraction of heads (KV groups) and of neurons any layer keeps "
                             "(at least one unit)", "what to prune")
    calib: str | None = option(None, f"calibration text: a named corpus ({', '.join(CORPORA)}: the calibration "
                               "split of IMDB reviews, Wikipedia passages, science paragraphs, or all three in "
                               "equal shares) or a .txt/.jsonl/.csv file", "calibration",
                               default_text="imdb", metavar="NAME|FILE")
    nsamples: int = option(64, "calibration sequences", "calibration")
    seqlen: int = option(512, "tokens per calibration sequence", "calibration")
    batch_size: int = option(8, "calibration sequences per forward pass", "calibration")
    calibration: str = option("dense", "dense: statistics of the unpruned model (one forward pass); sequential: "
                              "inputs of the already-pruned model fitted to the dense model's outputs",
                              "calibration", CALIBRATION_MODES)
    sequential_target: str = option("output", "sequential calibration only: what each consumer is fitted to: output "
                                    "(the dense consumer's output) or residual (the dense residual stream after the "
                                    "consumer's add, less the student's, so a block also repairs the drift that "
                                    "reaches it; decoders whose consumers add straight to the residual stream)",
                                    "calibration", SEQUENTIAL_TARGETS)
    sequential_mix: float = option(0.0, "sequential calibration only: the weight, in [0, 1), of the dense model's "
                                   "own consumer inputs and outputs in each fit against the student's (0: the "
                                   "student's only; 0.5: both equally, a pull toward dense calibration's solution)",
                                   "calibration", metavar="WEIGHT")
    offload: str = option("none", "where calibration activations wait between blocks: none (compute device), "
                          "cpu memory, or disk", "resources", OFFLOADS)
    max_memory: str | None = option(None, "spill calibration activations to disk when they would exceed this "
                                    "size (e.g. 8GiB)", "resources", default_text="no limit",
                                    metavar="SIZE")
    overlap: bool = option(True, "read and write blocks in the foreground, one after another (by default the next "
                           "block is read, and the finished one written, in background threads while a block "
                           "computes: up to two more blocks in memory)", "resources", flag="--no-overlap")
    seed: int = option(0, "seed of the random criterion and of the calibration sample", "calibration")
    device: str = option("auto", "compute device (auto: cuda when available, else cpu)", "resources", DEVICES)
    dtype: str = option("auto", "compute dtype of the model (auto: float32 on CPU, bfloat16 on GPU)", "resources",
                        DTYPES)
    backend: str = option("auto", "kernels for statistics and solves (auto: the fastest available)", "resources",
                          BACKENDS)
    expert_ratio: float = option(0.0, "mixture of experts only: the fraction of each layer's experts removed whole "
                                 "(lowest routed frequency × output energy first), on top of --ratio's heads and "
                                 "per-expert neurons", "what to prune")
    save_dtype: str = option("auto", "dtype of the written weights (auto: the input's; a dequantized GGUF is "
                             "float32)", "output", DTYPES)
    overwrite: bool = option(False, "replace an existing output folder (only a previous liar output, or an "
                             "empty folder)", "output", flag="--overwrite")

    def __post_init__(self) -> None:
        if not 0.0 < self.ratio < 1.0:
            raise ValueError(f"ratio={self.ratio} is outside (0, 1): it is the fraction of block parameters removed")
        _choice("criterion", self.criterion, CRITERIA)
        _choice("reconstruct", self.reconstruct, RECONSTRUCTIONS)
        _choice("selection", self.selection, SELECTIONS)
        _choice("allocation", self.allocation, ALLOCATIONS)
        _choice("gqa", self.gqa, GQA_MODES)
        _choice("calibration", self.calibration, CALIBRATION_MODES)
        _choice("sequential_target", self.sequential_target, SEQUENTIAL_TARGETS)
        if self.sequential_target != "output" and self.calibration != "sequential":
            raise ValueError(f"sequential_target={self.sequential_target!r} chooses what sequential calibration fits; "
                             "add --calibration sequential (dense calibration fits the dense outputs)")
        if not 0.0 <= self.sequential_mix < 1.0:
            raise ValueError(f"sequential_mix={self.sequential_mix} must be in [0, 1): the weight of the dense pairs "
                             "(1 would be dense calibration: use --calibration dense)")
        if self.sequential_mix and self.calibration != "sequential":
            raise ValueError(f"sequential_mix={self.sequential_mix} weighs dense against student statistics in "
                             "sequential calibration; add --calibration sequential")
        _choice("offload", self.offload, OFFLOADS)
        _choice("device", self.device, DEVICES)
        _choice("dtype", self.dtype, DTYPES)
        _choice("solve_dtype", self.solve_dtype, SOLVE_DTYPES)
        _choice("backend", self.backend, BACKENDS)
        _choice("save_dtype", self.save_dtype, DTYPES)
        self._check_alpha()
        if not 0.0 <= self.min_keep < 1.0:
            raise ValueError(f"min_keep={self.min_keep} must be in [0, 1)")
        for name in ("nsamples", "seqlen", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be a positive integer")
        if self.max_memory is not None:
            parse_bytes(self.max_memory)
        if not 0.0 <= self.expert_ratio < 1.0:
            raise ValueError(f"expert_ratio={self.expert_ratio} must be in [0, 1): the fraction of experts removed")
        if self.selection == "reconstruction" and self.reconstruct != "liar":
            raise ValueError(f"selection='reconstruction' picks the units LIAR rebuilds best; with reconstruct="
                             f"{self.reconstruct!r} nothing is rebuilt: use --selection criterion or --reconstruct liar")
        if self.reconstruct == "bias" and not self.intercept:
            raise ValueError("reconstruct='bias' adds a bias by definition; drop --no-bias or use reconstruct='liar'")

    def _check_alpha(self) -> None:
        if self.alpha == "auto":
            if self.reconstruct != "liar":
                raise ValueError(f"alpha='auto' chooses the damping of LIAR's solve; reconstruct={self.reconstruct!r} "
                                 "solves nothing: give a number or use reconstruct='liar'")
            if self.calibration != "dense":
                raise ValueError("alpha='auto' is for dense calibration (its folds are dense statistics); "
                                 "sequential calibration takes a number, e.g. alpha=0.01")
            if self.nsamples <= self.batch_size:
                raise ValueError(f"alpha='auto' splits the calibration batches into two folds: nsamples="
                                 f"{self.nsamples} in batches of {self.batch_size} is one batch; raise nsamples or "
                                 "lower batch_size")
            return
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)):
            raise ValueError(f"alpha={self.alpha!r}: give a number >= 0 or 'auto'")
        if not (math.isfinite(self.alpha) and self.alpha >= 0):
            raise ValueError(f"alpha={self.alpha} must be a finite number >= 0 (the damping is alpha · mean(diag C_RR));"
                             " the default 0.01 suits most models")

    def replace(self, **changes) -> PruneConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
