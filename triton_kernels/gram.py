"""Triton Gram accumulation: C[tile] += x_aᵀ x_b over the kept tokens, fp32 accumulation, fused column sums.

    gram_update(G, s, x, mask=None)                         G[upper tiles] += xᵀx, s += Σx; returns rows
    gram_update_cross(G_ss, G_ts, s_s, s_t, x_s, x_t, mask)  + G_ts += x_tᵀx_s (all tiles), s_t += Σx_t

One launch per call: programs [0, n_sym) run the upper-triangle tile pairs (i ≤ j) of the student Gram (the
diagonal ones also sum the student columns), the rest run the cross-Gram's tiles (the first tile column also
sums the teacher columns). When there are too few tiles to fill the GPU the tokens are split across programs
(split-K): each split writes its own partial buffer, and the partials are summed in split order afterwards, so
the result is the same bytes on every run (no atomics).
"""

from __future__ import annotations

import contextlib

import torch
import triton
import triton.language as tl

from liar.triton_kernels import interpreting
from liar.triton_kernels.configs import gram_configs

# Programs per multiprocessor to aim for before splitting the tokens (2 hides one program's epilogue).
PROGRAMS_PER_SM = 2
# A split must still stream at least this many K-steps, or writing and summing its partials outweighs the gain.
MIN_STEPS_PER_SPLIT = 8
# Splits are chosen before autotuning picks a tile: assume the largest tile and the shortest K-step.
SPLIT_BLOCK, SPLIT_BLOCK_K = 128, 32


@triton.jit
def _upper_tile(tile):
    """The tile pair (i, j), i ≤ j, of linear index `tile` in column order: (0,0), (0,1), (1,1), (0,2), ..."""
    j = ((tl.sqrt(8.0 * tile.to(tl.float32) + 1.0) - 1.0) * 0.5).to(tl.int32)
    j = tl.where((j + 1) * (j + 2) // 2 <= tile, j + 1, j)  # fix float rounding either way
    j = tl.where(j * (j + 1) // 2 > tile, j - 1, j)
    return tile - j * (j + 1) // 2, j


@triton.jit
def _accumulate(ptrs, value, mask):
    """*ptrs += value; each split owns its partial buffer, so no other program writes these addresses."""
    tl.store(ptrs, tl.load(ptrs, mask=mask, other=0.0) + value, mask=mask)


@triton.autotune(configs=gram_configs(), key=["DS", "DT"], restore_value=["gss_ptr", "gts_ptr", "ss_ptr", "st_ptr"])
@triton.jit
def _gram_kernel(
    # student x_s [T, DS] (every tile's B operand), teacher x_t [T, DT], mask [T] (uint8); contiguous fp32
    # outputs G_ss [DS, DS] (upper tiles), G_ts [DT, DS], and sums s_s [DS], s_t [DT]
    xs_ptr, xt_ptr, mask_ptr, gss_ptr, gts_ptr, ss_ptr, st_ptr,
    # sizes, row strides, and the distance between two splits' partial buffers (0 with one split)
    T, DS, DT, stride_s, stride_t, split_gss, split_gts, split_ss, split_st,
    # meta-parameters
    HAS_MASK: tl.constexpr, CAST_FP32: tl.constexpr, INPUT_PRECISION: tl.constexpr,
    BLOCK: tl.constexpr, BLOCK_K: tl.constexpr,
):
    tile = tl.program_id(0)
    split = tl.program_id(1).to(tl.int64)
    n_s = tl.cdiv(DS, BLOCK)
    n_sym = n_s * (n_s + 1) // 2
    # Programs [0, n_sym) run a tile pair (i ≤ j) of the student Gram, the diagonal ones owning the student
    # sums; the rest run a tile of the cross-Gram, the first tile column owning the teacher sums. Selects, not
    # branches: both sides stay one type whatever the JIT specializes, and divisibility survives a select.
    sym = tile < n_sym
    si, sj = _upper_tile(tile)
    ci, cj = (tile - n_sym) // n_s, (tile - n_sym) % n_s
    ti, tj = tl.where(sym, si, ci), tl.where(sym, sj, cj)
    xa_ptr = tl.where(sym, xs_ptr, xt_ptr)
    stride_a = tl.where(sym, stride_s, stride_t)
    DA = tl.where(sym, DS, DT)
    c_ptr = tl.where(sym, gss_ptr + split * split_gss, gts_ptr + split * split_gts)
    sum_ptr = tl.where(sym, ss_ptr + split * split_ss, st_ptr + split * split_st)
    own = tl.where(sym, ti == tj, tj == 0)
    offs_i = ti * BLOCK + tl.arange(0, BLOCK)
    offs_j = tj * BLOCK + tl.arange(0, BLOCK)
    in_i, in_j = offs_i < DA, offs_j < DS
    splits = tl.num_programs(1)
    per_split = tl.cdiv(tl.cdiv(T, splits), BLOCK_K) * BLOCK_K
    t_begin = tl.program_id(1) * per_split
    t_end = tl.minimum(T, t_begin + per_split)
    acc = tl.zeros((BLOCK, BLOCK), dtype=tl.float32)
    sums = tl.zeros((BLOCK,), dtype=tl.float32)
    for t0 in range(t_begin, t_end, BLOCK_K):
        offs_t = t0 + tl.arange(0, BLOCK_K)
        keep = offs_t < t_end
        if HAS_MASK:
            keep = keep & (tl.load(mask_ptr + offs_t, mask=keep, other=0) != 0)
        rows = offs_t.to(tl.int64)  # T × D passes 2^31 elements on large layers
        a = tl.load(xa_ptr + rows[None, :] * stride_a + offs_i[:, None], mask=in_i[:, None] & keep[None, :], other=0.0)
        b = tl.load(xs_ptr + rows[:, None] * stride_s + offs_j[None, :], mask=keep[:, None] & in_j[None, :], other=0.0)
        if CAST_FP32:  # the interpreter computes 16-bit dots wrongly; fp32 tiles are exact for 16-bit inputs
            a, b = a.to(tl.float32), b.to(tl.float32)
        acc = tl.dot(a, b, acc, input_precision=INPUT_PRECISION)
        if own:
            sums += tl.sum(a.to(tl.float32), axis=1)
    c_ptrs = c_ptr + offs_i.to(tl.int64)[:, None] * DS + offs_j[None, :]
    _accumulate(c_ptrs, acc, in_i[:, None] & in_j[None, :])
    if own:
        _accumulate(sum_ptr + offs_i, sums, in_i)


def _split(x: torch.Tensor, tiles: int, split: int | None) -> int:
    """Token splits: enough programs to fill the GPU, each still streaming MIN_STEPS_PER_SPLIT K-steps."""
    if split is not None:
        return max(1, split)
    if x.device.type != "cuda":
        return 1
    sms = torch.cuda.get_device_properties(x.device).multi_processor_count
    most = max(1, x.shape[0] // (SPLIT_BLOCK_K * MIN_STEPS_PER_SPLIT))
    return max(1, min(most, triton.cdiv(PROGRAMS_PER_SM * sms, tiles)))


def _launch(x_s, x_t, mask, G_ss, G_ts, s_s, s_t, split: int | None) -> None:
    """One launch: G_ss[upper tiles] += x_sᵀx_s, s_s += Σ x_s and, with a teacher x_t, G_ts += x_tᵀx_s, s_t += Σ x_t.

    With several token splits each writes zeroed partials [splits, ...], summed in split order afterwards.
    """
    T, DS = x_s.shape
    DT = 0 if x_t is None else x_t.shape[1]
    if T == 0 or DS == 0:
        return

    def tiles(block: int) -> int:
        n = triton.cdiv(DS, block)
        return n * (n + 1) // 2 + triton.cdiv(DT, block) * n

    splits = _split(x_s, tiles(SPLIT_BLOCK), split)
    totals = [G_ss, G_ts, s_s, s_t]
    parts = totals if splits == 1 else [
        None if t is None else torch.zeros((splits, *t.shape), dtype=t.dtype, device=t.device) for t in totals]
    distance = [0 if splits == 1 or t is None else t.numel() for t in totals]
    p_gss, p_gts, p_ss, p_st = parts
    precision = "ieee" if x_s.dtype == torch.float32 else "tf32"  # fp32 inputs: no TF32 rounding on GPU
    _gram_kernel[lambda meta: (tiles(meta["BLOCK"]), splits)](
        x_s, x_s if x_t is None else x_t, p_gss if mask is None else mask.view(torch.uint8),
        p_gss, p_gss if p_gts is None else p_gts, p_ss, p_ss if p_st is None else p_st,
        T, DS, DT, x_s.stride(0), x_s.stride(0) if x_t is None else x_t.stride(0), *distance,
        HAS_MASK=mask is not None, CAST_FP32=interpreting(), INPUT_PRECISION=precision,
    )
    if splits > 1:
        for total, part in zip(totals, parts):
            if total is not None:
                total += part.sum(dim=0)  # one reduction kernel without atomics: the same bytes every run


def _rows(x: torch.Tensor) -> torch.Tensor:
    return x if x.stride(-1) == 1 else x.contiguous()


def _count(x: torch.Tensor, mask: torch.Tensor | None) -> int:
    return x.shape[0] if mask is None else int(mask.sum())


def _on(device: torch.device):
    """Launch on the tensors' GPU, not on whichever one is current."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def _check(*tensors: torch.Tensor) -> None:
    for t in tensors:
        if t.dtype == torch.float64:
            raise TypeError("the triton backend has no float64 kernel; use backend='torch' for float64 activations")


def _check_outputs(*tensors: torch.Tensor) -> None:
    for t in tensors:
        if not t.is_contiguous():
            raise ValueError("the triton kernels write contiguous accumulators; call liar.ops.gram_update, which "
                             "routes any layout through a contiguous temporary")


def gram_update(G: torch.Tensor, s: torch.Tensor, x: torch.Tensor, mask: torch.Tensor | None = None, *,
                split: int | None = None) -> int:
    """G [D, D] fp32 (upper tiles) += xᵀx, s [D] fp32 += Σx over rows kept by mask [T] bool; returns rows."""
    _check(x)
    _check_outputs(G, s)
    x = _rows(x)
    with _on(x.device):
        _launch(x, None, mask, G, None, s, None, split)
    return _count(x, mask)


def gram_update_cross(G_ss: torch.Tensor, G_ts: torch.Tensor, s_s: torch.Tensor, s_t: torch.Tensor,
                      x_s: torch.Tensor, x_t: torch.Tensor, mask: torch.Tensor | None = None, *,
                      split: int | None = None) -> int:
    """Student Gram G_ss [D_s, D_s] (upper tiles), cross-Gram G_ts [D_t, D_s] += x_tᵀx_s and both sums: one launch."""
    _check(x_s, x_t)
    _check_outputs(G_ss, G_ts, s_s, s_t)
    x_s, x_t = _rows(x_s), _rows(x_t)
    with _on(x_s.device):
        if x_s.shape[1] == 0:  # no tile exists to carry the teacher sums
            s_t.add_((x_t if mask is None else x_t[mask]).to(torch.float32).sum(dim=0))
        _launch(x_s, x_t, mask, G_ss, G_ts, s_s, s_t, split)
    return _count(x_s, mask)
