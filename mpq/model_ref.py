"""Model references: ``module.path:function``, a Hugging Face model (directory or cached hub id), or the default example.

Resolving one is the only place the generic workload and the Hugging Face loader meet, so
:mod:`mpq.workload` (the type) and :mod:`mpq.hf` (which builds one) never import each other.
"""
from __future__ import annotations

import importlib
import os
import sys

from .errors import WorkloadError
from .hf import load_hf_workload
from .workload import Workload, as_workload

DEFAULT_MODEL = "mpq.examples.digits:workload"


def load_workload(ref: str | None = None, *, calib: str | None = None, hf: dict | None = None, **kwargs) -> Workload:
    """Resolve a model reference: ``module.path:function``, a Hugging Face model (a local directory, or a
    hub id found in the local cache), or None for the default. ``hf`` holds the Hugging Face loading
    options (:func:`mpq.hf.load_hf_workload`'s keywords); they do not apply to ``module:function``."""
    ref = ref or DEFAULT_MODEL
    if os.path.isdir(ref) or ":" not in ref:
        return load_hf_workload(ref, calib=calib, **(hf or {}), **kwargs)
    module_name, func_name = ref.split(":", 1)
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise WorkloadError(f"cannot import module {module_name!r} for model {ref!r}: {e}") from e
    fn = getattr(module, func_name, None)
    if fn is None:
        raise WorkloadError(f"module {module_name!r} has no attribute {func_name!r} (model {ref!r})")
    obj = fn(**kwargs) if callable(fn) else fn
    return as_workload(obj, name=ref)
