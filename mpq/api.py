"""The one-call Python API: ``mpq.plan``, ``mpq.apply``, ``mpq.export``.

In the manner of ModelOpt's ``auto_quantize`` and torchao's ``quantize_``::

    plan = mpq.plan(model, loader, budget={"avg_bits": 4.5}, loss=loss_fn)
    mpq.apply(model, plan)                        # fake-quantize in place, as planned
    mpq.export(plan, to="torchao", path="q.json") # or hand the plan to the quantizer you run

``mpq plan`` on the command line makes the same call (through :func:`mpq.pipeline.plan_model`),
with the same budget keys (:mod:`mpq.budget`).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence, Union

from torch import nn

from .budget import Budget, budget_constraints
from .calibration import DEFAULT_MAX_BATCHES, ForwardStep, LossFn, calibration_workload, take_batches
from .cost import CandidateSet
from .errors import DocumentError, WorkloadError
from .pipeline import DEFAULT_ESTIMATOR
from .schema import Plan
from .model_ref import load_workload
from .workload import Workload, as_workload

ModelLike = Union[nn.Module, Workload, str]
PlanLike = Union[Plan, str, Path]


def candidate_set(candidates: CandidateSet | Mapping[str, Any] | None) -> CandidateSet:
    """A :class:`CandidateSet` from itself or a dict of its fields (``{"bits": [2, 4, 8], "group_sizes": [None, 128]}``)."""
    if candidates is None:
        return CandidateSet()
    if isinstance(candidates, CandidateSet):
        return candidates
    if not isinstance(candidates, Mapping):
        raise DocumentError(f"candidates: expected a CandidateSet or a dict of its fields, got {type(candidates).__name__}")
    known = [f.name for f in dataclasses.fields(CandidateSet)]
    for key in candidates:
        if key not in known:
            raise DocumentError(f"candidates: unknown field {key!r}; known fields: {', '.join(known)}")
    values = {k: [v] if isinstance(v, (int, float, str)) or v is None else list(v) for k, v in candidates.items()}
    return CandidateSet(**values)


def workload_of(model: ModelLike, data: Any = None, *, loss: Optional[LossFn] = None, forward_step: Optional[ForwardStep] = None,
                evaluate: Optional[Callable[[nn.Module], dict]] = None, max_batches: Optional[int] = DEFAULT_MAX_BATCHES) -> Workload:
    """The Workload behind a call: a model with its data, a Workload itself, or a model reference as the CLI takes it."""
    if isinstance(model, (Workload, str)):
        if data is not None or loss is not None or forward_step is not None:
            raise WorkloadError("data, loss and forward_step go with a torch.nn.Module; a Workload or model reference brings its own")
        return model if isinstance(model, Workload) else load_workload(model)
    if isinstance(model, tuple):
        return as_workload(model)
    if data is None:
        raise WorkloadError("data is required with a torch.nn.Module: a DataLoader (or any iterable) of calibration batches")
    return calibration_workload(model, data, loss=loss, forward_step=forward_step, evaluate=evaluate, max_batches=max_batches)


def plan(
    model: ModelLike,
    data: Any = None,
    budget: Optional[Budget] = None,
    *,
    loss: Optional[LossFn] = None,
    forward_step: Optional[ForwardStep] = None,
    candidates: CandidateSet | Mapping[str, Any] | None = None,
    estimator: str = DEFAULT_ESTIMATOR,
    solver: str = "auto",
    target: Optional[str] = None,
    max_batches: Optional[int] = DEFAULT_MAX_BATCHES,
    estimator_settings: Optional[Mapping[str, Any]] = None,
    solver_settings: Optional[Mapping[str, Any]] = None,
    use_cache: bool = True,
) -> Plan:
    """The least-distortion mixed-precision plan for ``model`` within ``budget``.

    ``data``: a DataLoader (or any iterable) of dicts, ``(inputs, targets)`` pairs or tensors; the first
    ``max_batches`` are used. ``loss(outputs, targets)`` and ``forward_step(model, batch)`` are optional
    (see :mod:`mpq.calibration` for their defaults). ``budget``: ``{"avg_bits": 4.5}``, ``{"mb": 12}``,
    ``bytes``, ``bitops``, ``latency_ms``, several at once, or the CLI's ``"avg_bits=4,mb=12"``.
    ``candidates``: a :class:`~mpq.cost.CandidateSet` or a dict of its fields. ``target``: a deployment
    target whose constraints the plan must respect (``mpq targets`` lists them), e.g. ``"vllm"``.
    """
    from .pipeline import checked_solver, plan_model

    if budget is None:
        raise DocumentError("budget is required, e.g. budget={'avg_bits': 4} or budget={'mb': 12}")
    constraints = budget_constraints(budget)
    cands = candidate_set(candidates)
    cands.specs()  # an empty or invalid candidate set is refused before any work
    checked_solver(solver, solver_settings, estimator, estimator_settings)  # before the model runs
    workload = workload_of(model, data, loss=loss, forward_step=forward_step, max_batches=max_batches)
    result = plan_model(workload, constraints, estimator=estimator, solver=solver, candidates=cands,
                        estimator_settings=estimator_settings, solver_settings=solver_settings,
                        use_cache=use_cache, target=target)
    return result.plan


def read_plan(plan: PlanLike) -> Plan:
    """A plan document, or the plan read from a JSON file."""
    if isinstance(plan, Plan):
        return plan
    if isinstance(plan, (str, Path)):
        from .schema import load_document

        return load_document(plan, Plan)
    raise DocumentError(f"plan: expected an mpq.schema.Plan or the path of a plan file, got {type(plan).__name__}")


def apply(model: ModelLike, plan: PlanLike, data: Any = None, *, forward_step: Optional[ForwardStep] = None,
          inplace: bool = True, max_batches: Optional[int] = DEFAULT_MAX_BATCHES) -> nn.Module:
    """Fake-quantize (and prune) ``model`` as ``plan`` says, in place unless ``inplace=False``; returns the model.

    ``data`` is needed only by plans with activation bits, to calibrate the activation ranges.
    """
    from .apply import apply_plan

    plan = read_plan(plan)
    batches: Optional[Sequence] = None
    if isinstance(model, (Workload, str)):
        workload = workload_of(model)
        module, batches = workload.model, workload.batches
    elif isinstance(model, nn.Module):
        module = model
        if data is not None:
            from .calibration import _split

            batches = [_split(b, i, forward_step) for i, b in enumerate(take_batches(data, max_batches))]
    else:
        raise WorkloadError(f"model must be a torch.nn.Module, an mpq.Workload or a model reference, got {type(model).__name__}")
    return apply_plan(module, plan, inplace=inplace, batches=batches)


def export(plan: PlanLike, to: str, path: str | Path | None = None, *, keep_float: Sequence[str] = (), **options: Any):
    """``plan`` as the configuration of quantizer ``to`` (an :class:`~mpq.export.base.Export`); written to ``path`` if given.

    ``mpq.export.available_targets()`` lists the targets; a target that cannot express the plan raises
    an ExportError that says what to change.
    """
    from .export import export_plan, write_export

    result = export_plan(read_plan(plan), to, keep_float_layers=keep_float, **options)
    if path is not None:
        write_export(result, path)
    return result
