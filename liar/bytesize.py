"""Memory sizes written by people ('8GiB', '500MB'), read without importing anything heavy (the CLI
validates --max-memory before torch is loaded)."""

from __future__ import annotations

import re

_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 10**3, "kib": 2**10, "m": 2**20, "mb": 10**6, "mib": 2**20,
          "g": 2**30, "gb": 10**9, "gib": 2**30, "t": 2**40, "tb": 10**12, "tib": 2**40}


def parse_bytes(text: str) -> int:
    """'8GiB' → 8589934592; '500MB' → 500000000; plain numbers are bytes."""
    match = re.fullmatch(r"\s*([0-9.]+)\s*([a-zA-Z]*)\s*", text)
    if not match or match.group(2).lower() not in _UNITS:
        raise ValueError(f"cannot read {text!r} as a memory size; write e.g. 8GiB, 500MB or 1073741824")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])
