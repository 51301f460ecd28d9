"""Parse budgets as the CLI writes them: ``avg_bits=4``, ``mb=12``, ``bytes=``, ``bitops=``, ``latency_ms=``."""
from __future__ import annotations

import math
from typing import Iterable

from .errors import DocumentError

#: budget key -> (constraint name, factor to the constraint's unit). 1 MB = 10^6 bytes.
BUDGET_KEYS = {
    "avg_bits": ("max_avg_bits", 1.0),
    "mb": ("max_bytes", 1e6),
    "bytes": ("max_bytes", 1.0),
    "bitops": ("max_bitops", 1.0),
    "latency_ms": ("max_latency_ms", 1.0),
}


def parse_budgets(items: Iterable[str]) -> dict[str, float]:
    out: dict[str, float] = {}
    for item in items:
        for part in item.split(","):
            part = part.strip()
            if not part:
                continue
            key, sep, value = part.partition("=")
            key = key.strip().lower()
            if not sep or key not in BUDGET_KEYS:
                raise DocumentError(f"budget {part!r}: expected KEY=VALUE with KEY one of {', '.join(BUDGET_KEYS)}")
            try:
                number = float(value)
            except ValueError:
                raise DocumentError(f"budget {part!r}: {value!r} is not a number") from None
            if not math.isfinite(number) or number <= 0:
                raise DocumentError(f"budget {part!r}: the value must be a positive finite number, got {value}")
            name, factor = BUDGET_KEYS[key]
            if name in out:
                raise DocumentError(f"budget {part!r}: {name} is given twice")
            out[name] = number * factor
    return out
