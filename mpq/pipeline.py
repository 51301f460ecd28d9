"""The end-to-end Python API behind ``mpq plan``: workload -> graph -> sensitivities -> problem -> plan."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional

from .cost import CandidateSet, build_problem
from .graph import LayerGraph, discover
from .schema import Constraints, Plan, Problem, Provenance, SensitivityTable
from .workload import Workload


@dataclass
class PlanResult:
    graph: LayerGraph
    table: SensitivityTable
    problem: Problem
    plan: Plan


def sensitivities(
    workload: Workload,
    estimator: str = "hessian-trace",
    *,
    graph: Optional[LayerGraph] = None,
    candidates: CandidateSet | None = None,
    use_cache: bool = True,
    **settings: Any,
) -> SensitivityTable:
    from mpq.sensitivity.base import get_estimator
    from mpq.sensitivity.cache import estimate

    graph = graph or discover(workload)
    est = get_estimator(estimator, **settings)
    candidates = candidates or CandidateSet()
    options = candidates.specs() if est.per_option else None
    table = estimate(est, workload, graph, options, use_cache=use_cache)
    return with_activations(table, workload, graph, candidates, settings)


def with_activations(table: SensitivityTable, workload: Workload, graph: LayerGraph, candidates: CandidateSet,
                     settings: Mapping[str, Any]) -> SensitivityTable:
    """The table with the activation distortions the candidates' ``a_bits`` need (measured when missing)."""
    if all(a is None for a in candidates.a_bits):
        return table
    from mpq.sensitivity.activation import with_activation_sensitivity

    keep = {k: settings[k] for k in ("device", "quiet") if k in settings}  # every calibration batch is used
    return with_activation_sensitivity(table, workload, graph, candidates.a_bits, **keep)


def plan_model(
    workload: Workload,
    constraints: Constraints | Mapping[str, float],
    *,
    estimator: str = "hessian-trace",
    solver: str = "auto",
    candidates: CandidateSet | None = None,
    estimator_settings: Optional[Mapping[str, Any]] = None,
    solver_settings: Optional[Mapping[str, Any]] = None,
    table: Optional[SensitivityTable] = None,
    use_cache: bool = True,
    channel_groups: int = 1,
) -> PlanResult:
    from mpq.solvers import get_solver

    graph = discover(workload)
    candidates = candidates or CandidateSet()
    if table is None:
        table = sensitivities(workload, estimator, graph=graph, candidates=candidates, use_cache=use_cache, **dict(estimator_settings or {}))
    else:
        table = with_activations(table, workload, graph, candidates, dict(estimator_settings or {}))
    problem = build_problem(graph, table, candidates, constraints, channel_groups=channel_groups)
    prov = Provenance(estimator=table.estimator, model=problem.model)
    plan = get_solver(solver, **dict(solver_settings or {})).solve(problem, provenance=prov)
    return PlanResult(graph, table, problem, plan)
