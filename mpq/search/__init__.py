"""Distributed plan search on an Optuna study: storage, study settings, measured objective, workers.

Importing this package is light (no torch, and nothing of its own until a name is used: every ``mpq``
command imports ``mpq.search.cli`` to register its options, and ``mpq solve`` needs none of the rest).
``mpq.search.measured`` is the only model-facing module and is imported only by processes that
evaluate plans on a model.
"""
from __future__ import annotations

import importlib
from typing import Any

#: public name -> the module of this package that defines it (imported on first use)
_HOME = {
    "StorageUnreachable": "storage", "mask_url": "storage", "open_storage": "storage", "StudySearch": "shared",
    "SearchSpec": "study", "StudyMismatch": "study", "join_study": "study", "open_study": "study",
    "problem_fingerprint": "study",
}

__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
    globals()[name] = value
    return value
