"""Sequential calibration: every block sees the already-pruned model's activations (the student) and its
consumers are fitted, from the student's inputs, to targets taken from the dense model (the teacher):
  output    the dense consumer's output (on the teacher's inputs);
  residual  the dense residual stream after the consumer's add, less the student's residual before it: the
            attention consumer's target is y_o,t + h_t − h_s, the FFN consumer's is the teacher block's output
            less the student's mid-block residual, so a block also repairs the drift that reaches it (blocks
            whose consumers add straight to the residual stream: pre-norm decoders; checked on the first batch).
The statistics are the student's Gram and Σ y x_sᵀ of the targets y (liar.stats.CrossStats). With
sequential_mix = β the fit also weighs, by β against 1 − β, the dense consumers' own (input, output) pairs
on the same tokens: the sums dense calibration fits, so β → 1 approaches its solution.

Per block, three passes over the calibration batches; only the first runs the whole block:
  A. the teacher through the dense block (its outputs and its consumers' outputs), and the student up to the
     attention consumer, whose inputs are kept → attention statistics; prune attention.
  B. the student up to the FFN consumer, the attention not run: the kept heads' outputs do not depend on the
     pruned ones, so the pruned attention's output is o_proj' applied to the kept channels of the kept inputs
     (and is kept in turn) → FFN consumer inputs, against the cached targets → FFN statistics (the inputs are
     kept); prune the FFN.
  C. the student through the pruned block with neither attention nor FFN producers run: the attention output
     comes from pass B, and down_proj' reads the kept neurons of the kept FFN inputs (a neuron's activation
     depends on its own gate/up rows only) → the next block's student inputs.
The attention is skipped only where the block's attention module returns o_proj's output itself (checked on
the teacher pass: every decoder family; BERT's attention module adds its residual and norm, so there the
pruned attention runs in B and C). Each consumer is brought to its saved form (liar.blocks) before the student
reads its output, so a resumed run — which replays a finished block through the same passes with the saved
weights in place of the solves (`replay_step`) — computes the same bytes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from itertools import repeat

import torch
from torch import nn

from liar.activations import TensorStore
from liar.allocation import Budget
from liar.config import PruneConfig
from liar.forward import BatchMeta, NewStore, block_output, generator, new_stats, sum_over_ranks
from liar.models.base import Architecture, set_linear
from liar.prune_layer import prune_attention, prune_ffn
from liar.report import LayerReport, ModuleReport
from liar.stats import CrossStats
from liar.structure import LayerShape, heads_to_channels


class _Stop(Exception):
    """Raised once the last tensor a pass needs is captured, so the rest of the block is skipped."""


def _record(block: nn.Module, meta: BatchMeta, hidden: torch.Tensor, capture: list[nn.Module],
            stop_at: nn.Module | None = None, outputs: list[nn.Module] = (),
            ) -> tuple[dict[nn.Module, torch.Tensor], dict[nn.Module, object], torch.Tensor | None]:
    """(inputs of the `capture` modules, outputs of the `outputs` modules, the block output unless stopped
    early)."""
    seen: dict[nn.Module, torch.Tensor] = {}
    produced: dict[nn.Module, object] = {}

    def grab(module, args):
        seen[module] = args[0]
        if module is stop_at:
            raise _Stop

    def keep(module, _args, output):
        produced[module] = output

    handles = [m.register_forward_pre_hook(grab) for m in capture]
    handles += [m.register_forward_hook(keep) for m in dict.fromkeys(outputs)]
    try:
        out = block_output(block(hidden, *meta.args, **meta.kwargs))
    except _Stop:
        out = None
    finally:
        for h in handles:
            h.remove()
    return seen, produced, out


RESIDUAL_TOLERANCE = 1e-2  # ‖out − (h + y_o + y_down)‖ / ‖out‖: bf16 rounding of the two adds is ~4e-3; a norm
# between a consumer and its add (post-norm BERT, Gemma's sandwich norms) is O(1)


def _check_residual(arch: Architecture, h: torch.Tensor, y_o: torch.Tensor, y_down: torch.Tensor,
                    out: torch.Tensor) -> None:
    """The residual target needs a block computing out = h + y_o + y_down (the consumers add to the stream; OPT's
    FFN runs on flattened tokens, the same order)."""
    gap = float((out.float() - (h.float() + y_o.reshape(h.shape).float() + y_down.reshape(h.shape).float())).norm())
    if gap > RESIDUAL_TOLERANCE * float(out.float().norm()):
        raise ValueError(f"{arch.name}: sequential_target='residual' needs blocks whose attention and FFN outputs "
                         f"add straight to the residual stream (pre-norm decoders); this block's output differs "
                         f"from input + consumer outputs by {gap / float(out.float().norm()):.2g} of its norm: "
                         "use sequential_target='output'")


def _attention_module(arch: Architecture, layer: nn.Module) -> nn.Module | None:
    """The module that holds the attention producers and consumer (LLaMA's `self_attn`): o's lowest ancestor
    below the block that also holds q."""
    parts = arch.o.split(".")[:-1]
    while parts:
        path = ".".join(parts)
        if arch.q.startswith(path + "."):
            return layer.get_submodule(path)
        parts.pop()
    return None


@dataclass(frozen=True)
class _Skip:
    """How the attention module returns a given output without running: its output's tuple length (0: a bare
    tensor), learned from the teacher pass."""

    module: nn.Module
    arity: int

    @contextmanager
    def returning(self, output: torch.Tensor) -> Iterator[None]:
        result = output if self.arity == 0 else (output, *(None,) * (self.arity - 1))
        self.module.forward = lambda *args, **kwargs: result
        try:
            yield
        finally:
            del self.module.forward


def _skip_of(attention: nn.Module | None, produced: dict[nn.Module, object], o: nn.Module) -> _Skip | None:
    """A _Skip when the attention module's output is o's output itself (the object, not a copy): then o's
    output on cached inputs is exactly what the module would return."""
    if attention is None:
        return None
    out = produced[attention]
    first = out[0] if isinstance(out, tuple) else out
    if first is not produced[o]:
        return None
    return _Skip(attention, len(out) if isinstance(out, tuple) else 0)


@contextmanager
def _ffn_input(arch: Architecture, layer: nn.Module, down: nn.Module, x: torch.Tensor) -> Iterator[None]:
    """The FFN producers do not run and `down` reads `x` instead of what the activation made of them. The
    producers return two zero channels per token (two: a fused gate_up splits its output in halves), so the
    activation that `down` no longer reads costs next to nothing; an FFN that needed its full width would fail
    loudly on the shape, never silently."""
    producers = [layer.get_submodule(path) for path in dict.fromkeys(arch.ffn_in)]
    for lin in producers:
        lin.forward = lambda h: h.new_zeros(()).expand(*h.shape[:-1], 2)
    handle = down.register_forward_pre_hook(lambda _module, _args: (x,))
    try:
        yield
    finally:
        handle.remove()
        for lin in producers:
            del lin.forward


class _Clock:
    """Seconds spent in statistics and solves (the rest of a step is forward work)."""

    def __init__(self):
        self.began, self.statistics, self.solve = time.perf_counter(), 0.0, 0.0

    @contextmanager
    def counting(self, stage: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            setattr(self, stage, getattr(self, stage) + time.perf_counter() - started)

    def stages(self) -> dict[str, float]:
        forward = time.perf_counter() - self.began - self.statistics - self.solve
        return {"forward": forward, "statistics": self.statistics, "solve": self.solve}


def _passes(arch: Architecture, layer: nn.Module, metas: list[BatchMeta], teacher: TensorStore,
            student: TensorStore, new_store: NewStore, as_saved: Callable[[nn.Module], None],
            prune_attn: Callable[[CrossStats | None], torch.Tensor],
            prune_mlp: Callable[[CrossStats | None], torch.Tensor],
            stats: dict | None, clock: _Clock, residual: bool = False, dense_pairs: dict | None = None,
            mix: float = 0.0) -> tuple[TensorStore, TensorStore]:
    """Passes A, B, C of one block (see the module docstring); `prune_attn` / `prune_mlp` prune the block on
    the statistics (None when `stats` is: a replay) and return the kept consumer input channels. `dense_pairs`:
    statistics the teacher pass fills with the dense consumers' own inputs and outputs (under either target
    they are the pairs dense calibration fits), blended into `stats` with weight `mix` before each prune.
    Returns the teacher's and the student's outputs."""
    o, down = arch.attn_consumer(layer), arch.ffn_consumer(layer)
    attention = _attention_module(arch, layer)
    fitting = stats is not None
    t_out, t_down, s_attn_in = new_store(), new_store(), new_store()
    skip: _Skip | None = None
    for b, (meta, h_t, h_s) in enumerate(zip(metas, teacher.drain(), student, strict=True)):
        watch = [attention, o] if b == 0 and attention is not None else []
        x_t, y, out_t = _record(layer, meta, h_t, [o, down] if dense_pairs else [],
                                outputs=[*watch, o, down] if fitting else watch)
        if b == 0:
            skip = _skip_of(attention, y, o)
            if fitting and residual:
                if skip is None:
                    raise ValueError(f"{arch.name}: sequential_target='residual' needs an attention module that "
                                     "returns o_proj's output; use sequential_target='output'")
                _check_residual(arch, h_t, y[o], y[down], out_t)
        t_out.append(out_t)
        x_s, _, _ = _record(layer, meta, h_s, [o], stop_at=o)
        if skip is not None:
            s_attn_in.append(x_s[o])
        if fitting:
            if not residual:
                t_down.append(y[down])
            with clock.counting("statistics"):
                stats["attn"].update(x_s[o], y[o].reshape(h_t.shape) + (h_t - h_s) if residual else y[o], meta.mask)
                if dense_pairs:
                    dense_pairs["attn"].update(x_t[o], y[o], meta.mask)
                    dense_pairs["mlp"].update(x_t[down], y[down], meta.mask)
        del x_t, y
    if dense_pairs:
        stats["attn"].blend_(dense_pairs["attn"], mix)
    kept_attn = prune_attn(None if stats is None else stats["attn"])
    as_saved(layer)  # the student reads o's output next: in its saved form
    o, down = arch.attn_consumer(layer), arch.ffn_consumer(layer)  # pruning (and flagged biases) replace linears
    s_attn_out, s_ffn_in = new_store(), new_store()
    cached = s_attn_in.drain() if skip is not None else repeat(None)
    targets = (iter(t_out) if residual else t_down.drain()) if fitting else repeat(None)
    for meta, h_s, x_o, aim in zip(metas, student, cached, targets):
        attn_out = None if skip is None else o(x_o.index_select(-1, kept_attn.to(x_o.device)))
        with nullcontext() if skip is None else skip.returning(attn_out):
            x_s, _, _ = _record(layer, meta, h_s, [down], stop_at=down)
        if skip is not None:
            s_attn_out.append(attn_out)
        s_ffn_in.append(x_s[down])
        if fitting:
            target = aim - (h_s + attn_out) if residual else aim  # aim: the teacher block output | y_down,t
            with clock.counting("statistics"):
                stats["mlp"].update(x_s[down], target, meta.mask)
    t_down.clear()
    s_attn_in.clear()
    if dense_pairs:
        stats["mlp"].blend_(dense_pairs["mlp"], mix)
    kept_mlp = prune_mlp(None if stats is None else stats["mlp"])
    as_saved(layer)
    down = arch.ffn_consumer(layer)
    s_out = new_store()
    cached = s_attn_out.drain() if skip is not None else repeat(None)
    for meta, h_s, attn_out, x_d in zip(metas, student.drain(), cached, s_ffn_in.drain()):
        x = x_d.index_select(-1, kept_mlp.to(x_d.device))
        with nullcontext() if skip is None else skip.returning(attn_out), _ffn_input(arch, layer, down, x):
            s_out.append(block_output(layer(h_s, *meta.args, **meta.kwargs)))
    return t_out, s_out


def _attn_channels(report: ModuleReport, head_dim: int) -> torch.Tensor:
    return heads_to_channels(torch.tensor(report.kept, dtype=torch.long), head_dim)


def sequential_step(
    arch: Architecture, layer: nn.Module, shape: LayerShape, budget: Budget, metas: list[BatchMeta],
    teacher: TensorStore, student: TensorStore, config: PruneConfig, index: int, new_store: NewStore,
    as_saved: Callable[[nn.Module], None],
) -> tuple[LayerReport, TensorStore, TensorStore]:
    """Prune one block on student statistics; `as_saved` brings each pruned consumer to the exact form it is
    saved in before the student reads its output, so a resumed run (which reads it back) sees the same
    numbers."""
    clock = _Clock()
    stats = new_stats(arch, layer, config.backend, cls=CrossStats)
    reports: dict[str, ModuleReport] = {}

    def prune_attn(s: CrossStats) -> torch.Tensor:
        sum_over_ranks(s)
        s.check_finite(f"layer {index} attn consumer inputs")
        with clock.counting("solve"):
            reports["attn"] = prune_attention(arch, layer, shape, s, budget.attn_units, config,
                                              generator(config, index, "attn"))
        return _attn_channels(reports["attn"], shape.head_dim)

    def prune_mlp(s: CrossStats) -> torch.Tensor:
        sum_over_ranks(s)
        s.check_finite(f"layer {index} mlp consumer inputs")
        with clock.counting("solve"):
            reports["mlp"] = prune_ffn(arch, layer, shape, s, budget.neurons, config, generator(config, index, "mlp"))
        return torch.tensor(reports["mlp"].kept, dtype=torch.long)

    dense_pairs = new_stats(arch, layer, config.backend, cls=CrossStats) if config.sequential_mix else None
    t_out, s_out = _passes(arch, layer, metas, teacher, student, new_store, as_saved, prune_attn, prune_mlp, stats,
                           clock, residual=config.sequential_target == "residual", dense_pairs=dense_pairs,
                           mix=config.sequential_mix)
    return LayerReport(index=index, attn=reports["attn"], mlp=reports["mlp"], stages=clock.stages()), t_out, s_out


def replay_step(arch: Architecture, layer: nn.Module, finished: dict[str, torch.Tensor], report: LayerReport,
                head_dim: int, metas: list[BatchMeta], teacher: TensorStore, student: TensorStore,
                new_store: NewStore, as_saved: Callable[[nn.Module], None]) -> tuple[TensorStore, TensorStore]:
    """A finished block again, for a resumed run: the passes of `sequential_step` on the dense `layer`, the
    saved linears (`finished`: the block's tensors as written, by name within the block) in place of the
    solves. Returns the teacher's and the student's outputs, byte for byte those of the uninterrupted run."""

    def restore(kind: str) -> None:
        for path in arch.linears(layer, kind):
            set_linear(layer, path, finished[f"{path}.weight"], finished.get(f"{path}.bias"))
        arch.refresh_layer(layer, head_dim)

    def prune_attn(_stats) -> torch.Tensor:
        restore("attn")
        return _attn_channels(report.attn, head_dim)

    def prune_mlp(_stats) -> torch.Tensor:
        restore("mlp")
        return torch.tensor(report.mlp.kept, dtype=torch.long)

    return _passes(arch, layer, metas, teacher, student, new_store, as_saved, prune_attn, prune_mlp, None, _Clock())
