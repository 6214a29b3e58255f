"""Triton Gram accumulation: C[tile] += x_aᵀ x_b over the kept tokens, fp32 accumulation, fused column sums.

    gram_update(G, s, x, mask=None)                         G[upper tiles] += xᵀx, s += Σx; returns rows
    gram_update_cross(G_ss, G_ts, s_s, s_t, x_s, x_t, mask)  + G_ts += x_tᵀx_s (all tiles), s_t += Σx_t

A symmetric launch runs only the upper-triangle tile pairs (i ≤ j); the diagonal programs also sum their
columns. When there are too few tiles to fill the GPU the tokens are split across programs (split-K): each
split writes its own partial buffer, and the partials are summed in split order afterwards, so the result is
the same bytes on every run (no atomics).
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


@triton.autotune(configs=gram_configs(), key=["DA", "DB"], restore_value=["c_ptr", "sa_ptr", "sb_ptr"])
@triton.jit
def _gram_kernel(
    # pointers: activations [T, DA] and [T, DB], mask [T] (uint8), output C [DA, DB], sums [DA] and [DB]
    xa_ptr, xb_ptr, mask_ptr, c_ptr, sa_ptr, sb_ptr,
    # sizes, row strides, and the distance between two splits' partial buffers (0 with one split)
    T, DA, DB, stride_a, stride_b, stride_c, split_c, split_sa, split_sb,
    # meta-parameters
    SYMMETRIC: tl.constexpr, HAS_MASK: tl.constexpr, SUM_A: tl.constexpr, SUM_B: tl.constexpr,
    CAST_FP32: tl.constexpr, INPUT_PRECISION: tl.constexpr, BLOCK: tl.constexpr, BLOCK_K: tl.constexpr,
):
    tile = tl.program_id(0)
    if SYMMETRIC:
        ti, tj = _upper_tile(tile)
    else:
        ti, tj = tile // tl.cdiv(DB, BLOCK), tile % tl.cdiv(DB, BLOCK)
    offs_i = ti * BLOCK + tl.arange(0, BLOCK)
    offs_j = tj * BLOCK + tl.arange(0, BLOCK)
    in_i, in_j = offs_i < DA, offs_j < DB
    # Sums: the diagonal programs own the columns (symmetric), the first column of tiles owns the rows.
    own_a = tj == 0
    own_b = ti == tj
    splits = tl.num_programs(1)
    per_split = tl.cdiv(tl.cdiv(T, splits), BLOCK_K) * BLOCK_K
    t_begin = tl.program_id(1) * per_split
    t_end = tl.minimum(T, t_begin + per_split)
    acc = tl.zeros((BLOCK, BLOCK), dtype=tl.float32)
    sum_a = tl.zeros((BLOCK,), dtype=tl.float32)
    sum_b = tl.zeros((BLOCK,), dtype=tl.float32)
    for t0 in range(t_begin, t_end, BLOCK_K):
        offs_t = t0 + tl.arange(0, BLOCK_K)
        keep = offs_t < t_end
        if HAS_MASK:
            keep = keep & (tl.load(mask_ptr + offs_t, mask=keep, other=0) != 0)
        rows = offs_t.to(tl.int64)  # T × D passes 2^31 elements on large layers
        a = tl.load(xa_ptr + rows[None, :] * stride_a + offs_i[:, None], mask=in_i[:, None] & keep[None, :], other=0.0)
        b = tl.load(xb_ptr + rows[:, None] * stride_b + offs_j[None, :], mask=keep[:, None] & in_j[None, :], other=0.0)
        if CAST_FP32:  # the interpreter computes 16-bit dots wrongly; fp32 tiles are exact for 16-bit inputs
            a, b = a.to(tl.float32), b.to(tl.float32)
        acc = tl.dot(a, b, acc, input_precision=INPUT_PRECISION)
        if SUM_A:
            if own_a:
                sum_a += tl.sum(a.to(tl.float32), axis=1)
        if SUM_B:
            if own_b:
                sum_b += tl.sum(b.to(tl.float32), axis=0)
    split = tl.program_id(1).to(tl.int64)
    c_ptrs = c_ptr + split * split_c + offs_i.to(tl.int64)[:, None] * stride_c + offs_j[None, :]
    in_c = in_i[:, None] & in_j[None, :]
    _accumulate(c_ptrs, acc, in_c)
    if SUM_A:
        if own_a:
            _accumulate(sa_ptr + split * split_sa + offs_i, sum_a, in_i)
    if SUM_B:
        if own_b:
            _accumulate(sb_ptr + split * split_sb + offs_j, sum_b, in_j)


def _split(x: torch.Tensor, tiles: int, split: int | None) -> int:
    """Token splits: enough programs to fill the GPU, each still streaming MIN_STEPS_PER_SPLIT K-steps."""
    if split is not None:
        return max(1, split)
    if x.device.type != "cuda":
        return 1
    sms = torch.cuda.get_device_properties(x.device).multi_processor_count
    most = max(1, x.shape[0] // (SPLIT_BLOCK_K * MIN_STEPS_PER_SPLIT))
    return max(1, min(most, triton.cdiv(PROGRAMS_PER_SM * sms, tiles)))


def _launch(xa, xb, mask, C, sa, sb, *, symmetric: bool, split: int | None) -> None:
    """C [DA, DB] += xaᵀ xb (upper tiles only when symmetric); sa += Σ xa (if given), sb += Σ xb (if given).

    With several token splits each writes zeroed partials [splits, ...], summed in split order afterwards.
    """
    T, DA = xa.shape
    DB = xb.shape[1]
    if T == 0 or DA == 0 or DB == 0:
        return

    def tiles(block: int) -> int:
        n = triton.cdiv(DB, block)
        return n * (n + 1) // 2 if symmetric else triton.cdiv(DA, block) * n

    splits = _split(xa, tiles(SPLIT_BLOCK), split)
    targets = [C, sa, sb]
    if splits > 1:
        targets = [None if t is None else torch.zeros((splits, *t.shape), dtype=t.dtype, device=t.device)
                   for t in targets]
    part_c, part_a, part_b = targets
    precision = "ieee" if xa.dtype == torch.float32 else "tf32"  # fp32 inputs: no TF32 rounding on GPU
    _gram_kernel[lambda meta: (tiles(meta["BLOCK"]), splits)](
        xa, xb, part_c if mask is None else mask.view(torch.uint8), part_c,
        part_c if part_a is None else part_a, part_c if part_b is None else part_b,
        T, DA, DB, xa.stride(0), xb.stride(0), part_c.stride(-2),
        DA * DB if splits > 1 else 0, DA if splits > 1 else 0, DB if splits > 1 else 0,
        SYMMETRIC=symmetric, HAS_MASK=mask is not None, SUM_A=sa is not None, SUM_B=sb is not None,
        CAST_FP32=interpreting(), INPUT_PRECISION=precision,
    )
    if splits > 1:
        for total, partial in zip((C, sa, sb), targets):
            if total is not None:
                total += partial.sum(dim=0)  # one reduction kernel, fixed order for a fixed shape


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


def gram_update(G: torch.Tensor, s: torch.Tensor, x: torch.Tensor, mask: torch.Tensor | None = None, *,
                split: int | None = None) -> int:
    """G [D, D] fp32 (upper tiles) += xᵀx, s [D] fp32 += Σx over rows kept by mask [T] bool; returns rows."""
    _check(x)
    x = _rows(x)
    with _on(x.device):
        _launch(x, x, mask, G, None, s, symmetric=True, split=split)
    return _count(x, mask)


def gram_update_cross(G_ss: torch.Tensor, G_ts: torch.Tensor, s_s: torch.Tensor, s_t: torch.Tensor,
                      x_s: torch.Tensor, x_t: torch.Tensor, mask: torch.Tensor | None = None, *,
                      split: int | None = None) -> int:
    """Student Gram G_ss [D_s, D_s] (upper tiles), cross-Gram G_ts [D_t, D_s] += x_tᵀx_s, and both sums."""
    _check(x_s, x_t)
    x_s, x_t = _rows(x_s), _rows(x_t)
    with _on(x_s.device):
        _launch(x_s, x_s, mask, G_ss, None, s_s, symmetric=True, split=split)
        if x_s.shape[1] == 0:  # no cross tile exists to carry the teacher sums
            s_t.add_((x_t if mask is None else x_t[mask]).to(torch.float32).sum(dim=0))
        _launch(x_t, x_s, mask, G_ts, s_t, None, symmetric=False, split=split)
    return _count(x_s, mask)
