"""Checking the settings a registry passes to an estimator or solver constructor (pure Python, no torch)."""
from __future__ import annotations

import inspect
from typing import Any, Mapping


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
