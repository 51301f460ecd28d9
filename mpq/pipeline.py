"""The end-to-end Python API behind ``mpq plan``: workload -> graph -> sensitivities -> problem -> plan -> refinement.

The defaults live here and nowhere else (the CLI reads them): the ``output-gn`` estimator (a
Monte-Carlo Gauss-Newton of each layer's damage at the model's output), the exact additive optimum
(``solver="auto"``), then a measured refinement of that plan on the calibration data
(``refine=DEFAULT_REFINE_EVALS`` whole-model evaluations; 0 turns it off). The evidence for this
choice is ``benchmarks/plan_quality.py`` (quoted in the README).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

from .cost import CandidateSet, build_problem
from .errors import DocumentError
from .graph import LayerGraph, discover, restrict
from .schema import Constraints, Plan, Problem, Provenance, SensitivityTable
from .workload import Workload

DEFAULT_ESTIMATOR = "output-gn"
#: whole-model evaluations the measured refinement may spend (the seed's own included); 0 = no refinement
DEFAULT_REFINE_EVALS = 12


@dataclass
class PlanResult:
    graph: LayerGraph
    table: SensitivityTable
    problem: Problem
    plan: Plan
    refinement: Any = None  # mpq.refine.Refinement when the plan was refined


def sensitivities(
    workload: Workload,
    estimator: str = DEFAULT_ESTIMATOR,
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
    estimator: str = DEFAULT_ESTIMATOR,
    solver: str = "auto",
    candidates: CandidateSet | None = None,
    estimator_settings: Optional[Mapping[str, Any]] = None,
    solver_settings: Optional[Mapping[str, Any]] = None,
    table: Optional[SensitivityTable] = None,
    use_cache: bool = True,
    channel_groups: int = 1,
    refine: int = DEFAULT_REFINE_EVALS,
    seed: int = 0,
    layers: Optional[Sequence[str]] = None,
) -> PlanResult:
    """Plan ``workload`` under ``constraints``; ``layers`` limits the planned layers (the rest stay in float, outside the budget)."""
    from mpq.solvers import get_solver

    if isinstance(refine, bool) or not isinstance(refine, int) or refine < 0:
        raise DocumentError(f"refine: expected a number of whole-model evaluations >= 0 (0 = no refinement), got {refine!r}")
    graph = discover(workload)
    if layers is not None:
        graph = restrict(graph, layers)
    candidates = candidates or CandidateSet()
    if table is None:
        table = sensitivities(workload, estimator, graph=graph, candidates=candidates, use_cache=use_cache, **dict(estimator_settings or {}))
    else:
        table = with_activations(table, workload, graph, candidates, dict(estimator_settings or {}))
    problem = build_problem(graph, table, candidates, constraints, channel_groups=channel_groups, layers=graph.names)
    prov = Provenance(estimator=table.estimator, model=problem.model)
    plan = get_solver(solver, **dict(solver_settings or {})).solve(problem, provenance=prov)
    refinement = None
    # bisection already judges plans by the measured metric; activation quantization needs calibrated ranges per plan
    if refine and solver != "bisection" and all(a is None for a in candidates.a_bits):
        from mpq.refine import floor_plans, refine_plan
        from mpq.search.measured import measured_objective

        refinement = refine_plan(problem, plan, measured_objective(workload), max_evals=refine, seed=seed,
                                 alternatives=floor_plans(problem, solver))
        plan = refinement.plan
    return PlanResult(graph, table, problem, plan, refinement)
