"""Budgets in one vocabulary for the CLI and the Python API: ``avg_bits``, ``mb``, ``bytes``, ``bitops``, ``latency_ms``.

``mpq plan --budget avg_bits=4 --budget mb=12`` and ``mpq.plan(..., budget={"avg_bits": 4, "mb": 12})``
go through :func:`budget_constraints`, so both accept the same keys and refuse the same mistakes.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, Union

from .errors import DocumentError

#: budget key -> (constraint name, factor to the constraint's unit). 1 MB = 10^6 bytes.
BUDGET_KEYS = {
    "avg_bits": ("max_avg_bits", 1.0),
    "mb": ("max_bytes", 1e6),
    "bytes": ("max_bytes", 1.0),
    "bitops": ("max_bitops", 1.0),
    "latency_ms": ("max_latency_ms", 1.0),
}

#: What a budget may be given as: ``{"avg_bits": 4}``, ``"avg_bits=4,mb=12"`` or a list of such strings.
Budget = Union[Mapping[str, Any], str, Iterable[str]]


def _unknown_key(key: str, where: str) -> DocumentError:
    hint = ""
    for budget_key, (constraint, _) in BUDGET_KEYS.items():
        if key == constraint:
            hint = f" (the document field {constraint!r} is the budget key {budget_key!r})"
            break
    return DocumentError(f"budget {where}: unknown key {key!r}{hint}; known keys: {', '.join(BUDGET_KEYS)}")


def _add(out: dict[str, float], key: Any, value: Any, where: str) -> None:
    key = str(key).strip().lower()
    if key not in BUDGET_KEYS:
        raise _unknown_key(key, where)
    if isinstance(value, bool):
        raise DocumentError(f"budget {where}: {key} must be a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise DocumentError(f"budget {where}: {key} must be a number, got {value!r}") from None
    if not math.isfinite(number) or number <= 0:
        raise DocumentError(f"budget {where}: {key} must be a positive finite number, got {value!r}")
    name, factor = BUDGET_KEYS[key]
    if name in out:
        raise DocumentError(f"budget {where}: {name} is given twice (by {key!r} and another key)")
    out[name] = number * factor


def budget_constraints(budget: Budget) -> dict[str, float]:
    """Constraint values (``max_bytes``, ``max_avg_bits``, ...) of a budget; at least one must be given."""
    out: dict[str, float] = {}
    if isinstance(budget, Mapping):
        for key, value in budget.items():
            _add(out, key, value, repr({key: value}))
    else:
        items = [budget] if isinstance(budget, str) else list(budget)
        for item in items:
            if not isinstance(item, str):
                raise DocumentError(f"budget: expected a dict like {{'avg_bits': 4}} or strings like 'avg_bits=4', got {item!r}")
            for part in item.split(","):
                part = part.strip()
                if not part:
                    continue
                key, sep, value = part.partition("=")
                if not sep:
                    raise DocumentError(f"budget {part!r}: expected KEY=VALUE with KEY one of {', '.join(BUDGET_KEYS)}")
                _add(out, key, value.strip(), repr(part))
    if not out:
        raise DocumentError(f"budget: give at least one of {', '.join(BUDGET_KEYS)}, e.g. avg_bits=4 or mb=12")
    return out


def parse_budgets(items: Iterable[str]) -> dict[str, float]:
    """The CLI's ``--budget`` values (each ``KEY=VALUE[,KEY=VALUE]``) as constraint values."""
    return budget_constraints(list(items))
