"""mpq: mixed-precision bit allocation for PyTorch models.

    import mpq
    plan = mpq.plan(model, loader, budget={"avg_bits": 4.5}, loss=loss_fn)   # -> mpq.Plan
    mpq.apply(model, plan)                                                   # fake-quantize as planned
    mpq.export(plan, to="torchao", path="quant.json")                        # or configure your quantizer

Light at import: the documents (``mpq.schema``) and solvers never pull in torch; every name below
is imported on first use.
"""
__version__ = "0.1.0"

#: Top-level name -> the module that defines it.
_LAZY = {
    # the one-call API (mpq.api); plan, apply and export are callable modules, see mpq._entry
    "read_plan": "mpq.api",
    "candidate_set": "mpq.api",
    # user-side contracts
    "Workload": "mpq.workload",
    "load_workload": "mpq.model_ref",
    "calibration_workload": "mpq.calibration",
    "CandidateSet": "mpq.cost",
    "budget_constraints": "mpq.budget",
    "BUDGET_KEYS": "mpq.budget",
    # documents
    "Plan": "mpq.schema",
    "Problem": "mpq.schema",
    "SensitivityTable": "mpq.schema",
    "Constraints": "mpq.schema",
    "load_document": "mpq.schema",
    "save_document": "mpq.schema",
    # the pipeline's steps
    "discover": "mpq.graph",
    "sensitivities": "mpq.pipeline",
    "build_problem": "mpq.cost",
    "plan_model": "mpq.pipeline",
    "PlanResult": "mpq.pipeline",
    "get_solver": "mpq.solvers",
    "get_estimator": "mpq.sensitivity.base",
    "apply_plan": "mpq.apply",
    "export_plan": "mpq.export",
    "available_targets": "mpq.export",
    # errors
    "MpqError": "mpq.errors",
    "DocumentError": "mpq.errors",
    "WorkloadError": "mpq.errors",
    "PlanInfeasible": "mpq.errors",
    "ExportError": "mpq.errors",
    "UnknownName": "mpq.errors",
}

#: Callable modules: ``mpq.plan(...)`` plans, ``mpq.apply(...)`` applies, ``mpq.export(...)`` exports.
_CALLABLE_MODULES = ("plan", "apply", "export")


def __getattr__(name: str):
    import importlib

    if name in _CALLABLE_MODULES:
        return importlib.import_module(f"mpq.{name}")
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mpq' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = ["__version__", *_CALLABLE_MODULES, *_LAZY]
