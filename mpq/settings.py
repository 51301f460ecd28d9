"""Checking the settings a registry passes to an estimator or solver constructor (pure Python, no torch)."""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional


def accepted_settings(cls: type) -> set[str]:
    """Keyword settings the class's constructors (its own and its bases') name explicitly."""
    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None or klass is object:
            continue
        for p in inspect.signature(init).parameters.values():
            if p.name != "self" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD):
                names.add(p.name)
    return names


def check_settings(label: str, cls: type, settings: Mapping[str, Any], error: type[Exception]) -> None:
    """Refuse settings no constructor names, so a typo is an error rather than silently ignored."""
    known = accepted_settings(cls)
    unknown = sorted(set(settings) - known)
    if unknown:
        raise error(f"{label}: unknown setting(s) {unknown}; known: {', '.join(sorted(known))}")
    check_values(label, settings, error)


@dataclass(frozen=True)
class Range:
    """What a numeric setting accepts: its kind (``int`` or ``float``), bounds, and whether None means 'unset'."""

    kind: type
    low: Optional[float] = None
    low_open: bool = False  # True: the value must be > low; False: >= low
    high: Optional[float] = None
    optional: bool = True

    def problem(self, value: Any) -> Optional[str]:
        """Why ``value`` is refused, or None when it is accepted."""
        if value is None:
            return None if self.optional else "is required"
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (self.kind is int and not float(value).is_integer()):
            return f"must be {'an integer' if self.kind is int else 'a number'}, got {value!r}"
        if not math.isfinite(value):
            return f"must be a finite number, got {value!r}"
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return f"must be {'>' if self.low_open else '>='} {self.low:g}, got {value!r}"
        if self.high is not None and value > self.high:
            return f"must be <= {self.high:g}, got {value!r}"
        return None


#: Ranges of the numeric settings estimators and solvers share by name, checked once at the registry
#: boundary (the constructors may add their own checks; none may accept a value outside these).
RANGES: dict[str, Range] = {
    "time_limit_s": Range(float, 0, low_open=True),
    "gap_rel": Range(float, 0),
    "core_groups": Range(int, 1),
    "trials": Range(int, 1),
    "population": Range(int, 2),
    "max_distortion": Range(float, 0),
    "max_drop": Range(float, 0),
    "heartbeat_s": Range(int, 1),
}


def check_values(label: str, settings: Mapping[str, Any], error: type[Exception]) -> None:
    """Refuse a setting outside its declared range (NaN, negative, zero where it must be positive, a string)."""
    for name, value in settings.items():
        rule = RANGES.get(name)
        why = rule.problem(value) if rule is not None else None
        if why is not None:
            raise error(f"{label}: {name} {why}")
