"""Sorted index lists written the way people read them: [0, 1, 2, 3, 5, 7, 8, 9] <-> "0-3,5,7-9"."""

from __future__ import annotations


def to_ranges(indices: list[int]) -> str:
    """Non-negative ints as comma-separated runs of consecutive values ("" for none); order is kept."""
    runs: list[list[int]] = []
    for i in indices:
        if i < 0:
            raise ValueError(f"index {i} is negative; only non-negative indices can be written as ranges")
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def from_ranges(text: str) -> list[int]:
    """The inverse of to_ranges."""
    out: list[int] = []
    for part in filter(None, text.split(",")):
        first, _, last = part.partition("-")
        try:
            out.extend(range(int(first), int(last or first) + 1))
        except ValueError:
            raise ValueError(f"cannot read {part!r} in {text!r} as an index or a range like 3-7") from None
    return out
