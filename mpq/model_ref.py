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
    except Exception as e:  # the user's module itself fails: name it, not a traceback through mpq
        raise WorkloadError(f"importing module {module_name!r} for model {ref!r} raised {type(e).__name__}: {e}") from e
    fn = getattr(module, func_name, None)
    if fn is None:
        raise WorkloadError(f"module {module_name!r} has no attribute {func_name!r} (model {ref!r})")
    try:
        obj = fn(**kwargs) if callable(fn) else fn
    except Exception as e:
        raise WorkloadError(f"model {ref!r}: {func_name}() raised {type(e).__name__}: {e}") from e
    workload = as_workload(obj, name=ref)
    check_first_batch(workload)
    return workload


def check_first_batch(workload: Workload) -> None:
    """Run the model and loss on the first calibration batch once, so batches that do not fit the model are
    a named error before any estimator starts (and not a traceback from deep inside one)."""
    import torch

    training = workload.model.training
    workload.model.eval()  # no batch-norm statistics or dropout state change from this check
    try:
        with torch.no_grad():
            workload.loss()
    except WorkloadError:
        raise
    except Exception as e:
        message = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise WorkloadError(
            f"workload {workload.name!r}: the model and loss fail on calibration batch 0 ({type(e).__name__}: {message}); "
            "check that the batches are (inputs, targets) the model and loss_fn accept"
        ) from e
    finally:
        workload.model.train(training)
