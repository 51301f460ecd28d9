"""The HTTP search service (``mpq serve``): plans, frontiers and background searches over mpq's solvers.

``create_app(ServiceConfig(...))`` builds the FastAPI app; ``mpq.client.Client`` talks to it.
Light at import: the client imports ``mpq.service.answers`` without pulling in FastAPI.
"""
from __future__ import annotations

_LAZY = {"create_app": "mpq.service.app", "ServiceConfig": "mpq.service.limits", "Limits": "mpq.service.limits"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mpq.service' has no attribute {name!r}")


__all__ = list(_LAZY)
