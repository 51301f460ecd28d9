"""Modules that are also the one-call API: ``mpq.plan(...)``, ``mpq.apply(...)``, ``mpq.export(...)``.

``mpq.plan``, ``mpq.apply`` and ``mpq.export`` are modules (plans, applying plans, exporters) that
others import; Python sets a package's attribute to its submodule whenever that submodule loads,
so a function of the same name on ``mpq`` would be replaced. Instead these modules are callable:
calling one calls its function in :mod:`mpq.api`, imported on first call so that importing the
module stays light (solvers import ``mpq.plan`` and never torch). ``inspect.signature`` and
``help`` follow ``__wrapped__`` to that function.
"""
from __future__ import annotations

import importlib
import sys
import types


def make_callable(module_name: str, function: str) -> None:
    """Calling the module ``module_name`` calls ``mpq.api.<function>``."""

    class CallableModule(types.ModuleType):
        def __call__(self, *args, **kwargs):
            return getattr(importlib.import_module("mpq.api"), function)(*args, **kwargs)

        @property
        def __wrapped__(self):
            return getattr(importlib.import_module("mpq.api"), function)

    CallableModule.__name__ = CallableModule.__qualname__ = f"CallableModule[{function}]"
    sys.modules[module_name].__class__ = CallableModule
