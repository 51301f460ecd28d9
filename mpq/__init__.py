"""mpq: mixed-precision bit allocation for PyTorch models.

Light at import: the documents (``mpq.schema``) and solvers never pull in torch; model-facing
names are imported on first use.
"""
from __future__ import annotations

__version__ = "0.1.0"

_LAZY = {
    "Workload": "mpq.workload",
    "load_workload": "mpq.workload",
    "discover": "mpq.graph",
    "Plan": "mpq.schema",
    "Problem": "mpq.schema",
    "SensitivityTable": "mpq.schema",
    "build_problem": "mpq.cost",
    "apply_plan": "mpq.apply",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mpq' has no attribute {name!r}")


__all__ = ["__version__", *_LAZY]
