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

from . import targets
from .console import LOG
from .cost import CandidateSet, build_problem
from .errors import TargetError
from .errors import DocumentError, PlanInfeasible
from .graph import LayerGraph, discover, restrict
from .schema import Constraints, LatencyTable, Plan, Problem, Provenance, SensitivityTable
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
    #: with a latency table: the profiled rest of the model, and the end-to-end prediction with its spread
    latency_overhead_ms: Optional[float] = None
    predicted_latency_ms: Optional[float] = None
    latency_spread_ms: Optional[float] = None


def sensitivities(
    workload: Workload,
    estimator: str = DEFAULT_ESTIMATOR,
    *,
    graph: Optional[LayerGraph] = None,
    candidates: CandidateSet | None = None,
    use_cache: bool = True,
    target: Optional[str] = None,
    **settings: Any,
) -> SensitivityTable:
    from mpq.sensitivity.base import get_estimator
    from mpq.sensitivity.cache import estimate

    graph = graph or discover(workload)
    est = get_estimator(estimator, **settings)
    candidates = candidates or CandidateSet()
    options = None
    if est.per_option:
        options = candidates.specs()
        if target is not None:  # measure the options as the target stores them (its blocks, its channels)
            options = {oid: spec for l in graph for oid, spec in targets.layer_specs(target, l.name, l.shape, options, l.kind).items()}
    table = estimate(est, workload, graph, options, use_cache=use_cache)
    return with_activations(with_routing(table, workload, graph), workload, graph, candidates, settings)


def with_routing(table: SensitivityTable, workload: Workload, graph: LayerGraph) -> SensitivityTable:
    """The table with each expert layer's routing frequency on the calibration data (``layers.*.routing_frequency``:
    the share of token positions routed to it); unchanged for models without experts or when already there."""
    from .experts import routing_frequency

    if any("routing_frequency" in (l.model_extra or {}) for l in table.layers.values()):
        return table
    freq = routing_frequency(workload.model, {n: graph.module(n) for n in graph.names}, workload.batches)
    if not freq:
        return table
    layers = {n: l.model_copy(update={"routing_frequency": freq[n]}) if n in freq else l for n, l in table.layers.items()}
    meta = {**table.meta, "routing_frequency": "share of calibration token positions routed to each expert layer"}
    return table.model_copy(update={"layers": layers, "meta": meta})


def with_activations(table: SensitivityTable, workload: Workload, graph: LayerGraph, candidates: CandidateSet,
                     settings: Mapping[str, Any]) -> SensitivityTable:
    """The table with the activation distortions the candidates' ``a_bits`` need (measured when missing)."""
    if all(a is None for a in candidates.a_bits):
        return table
    from mpq.sensitivity.activation import with_activation_sensitivity

    keep = {k: settings[k] for k in ("device", "quiet") if k in settings}  # every calibration batch is used
    return with_activation_sensitivity(table, workload, graph, candidates.a_bits, **keep)


def checked_solver(solver: str, solver_settings: Optional[Mapping[str, Any]] = None, estimator: Optional[str] = None,
                   estimator_settings: Optional[Mapping[str, Any]] = None):
    """The solver, built from its name and settings, after the estimator's are checked: a typo in either
    is refused before the model runs, not after minutes of sensitivity estimation."""
    from mpq.sensitivity.base import get_estimator
    from mpq.solvers import get_solver

    if estimator is not None:
        get_estimator(estimator, **dict(estimator_settings or {}))
    return get_solver(solver, **dict(solver_settings or {}))


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
    latency_table: Optional[LatencyTable] = None,
    kv_bits: Sequence[int] = (),
    context_tokens: Optional[int] = None,
    target: Optional[str] = None,
    preset: Optional[str] = None,
    routing_weight: bool = False,
    refine: int = DEFAULT_REFINE_EVALS,
    seed: int = 0,
    layers: Optional[Sequence[str]] = None,
) -> PlanResult:
    """Plan ``workload`` under ``constraints``. With ``latency_table`` (``mpq profile``), options are priced
    in milliseconds and ``max_latency_ms`` is end to end: the layers get it less the model's profiled overhead.
    With ``kv_bits`` (and ``context_tokens``), each attention module's KV cache is one more planned entry
    (``mpq.kv_cache``) whose memory counts in ``max_bytes`` beside the weights.
    ``routing_weight``: weigh expert layers' distortions by their routing frequency (see ``build_problem``).

    With ``target`` (an export target, see ``mpq targets``) the plan is made for that quantizer:
    candidates from its ``preset`` (or its default preset) unless ``candidates`` are given (then
    restricted to what it stores), its fused layers tied, sizes in its accounting, and the plan
    exports to it.
    ``layers`` limits the planned layers (the rest stay as they are, outside the budget); ``refine`` is the
    number of whole-model evaluations of the measured refinement (0: the additive optimum as it is)."""
    if isinstance(refine, bool) or not isinstance(refine, int) or refine < 0:
        raise DocumentError(f"refine: expected a number of whole-model evaluations >= 0 (0 = no refinement), got {refine!r}")
    if preset is not None and target is None:
        raise TargetError(f"preset {preset!r} needs a target (presets belong to a target; see mpq targets)")
    if target is not None:
        if candidates is not None and preset is not None:
            raise TargetError("give either candidates or a preset, not both")
        targets.support_of(target)  # an unknown target fails before any work
        candidates = candidates or targets.candidates(target, preset)
    import time

    solve = checked_solver(solver, solver_settings, estimator if table is None else None, estimator_settings)
    t0 = time.perf_counter()
    graph = discover(workload)
    if layers is not None:
        graph = restrict(graph, layers)
    LOG.debug("graph: %d quantizable layers, %d weights (%s edges)", len(graph), sum(l.params for l in graph), graph.method)
    candidates = candidates or CandidateSet()
    if target is not None:  # every layer must have an option the target stores before any estimation runs
        for l in graph:
            targets.layer_specs(target, l.name, l.shape, candidates.specs(), l.kind)
    if table is None:
        table = sensitivities(workload, estimator, graph=graph, candidates=candidates, use_cache=use_cache, target=target,
                              **dict(estimator_settings or {}))
    else:
        table = with_activations(with_routing(table, workload, graph), workload, graph, candidates, dict(estimator_settings or {}))
    constraints = dict(constraints.active() if isinstance(constraints, Constraints) else constraints)
    priced, timing = None, None
    if latency_table is not None:
        from .latency import input_shapes, model_overhead, option_latencies

        priced = option_latencies(latency_table, graph, list(candidates.specs()), input_shapes(workload, graph))
        timing = model_overhead(latency_table, workload)
        if timing is not None and constraints.get("max_latency_ms") is not None:
            layers_ms = constraints["max_latency_ms"] - timing.overhead_ms
            if layers_ms <= 0:
                raise PlanInfeasible(f"budget latency_ms={constraints['max_latency_ms']:g}: the profiled rest of the model "
                                     f"alone takes {timing.overhead_ms:.4g} ms; the smallest feasible budget is above that")
            constraints["max_latency_ms"] = layers_ms
    latency = {n: {o: ms for o, (ms, _) in row.items()} for n, row in priced.items()} if priced else None
    LOG.debug("sensitivity: %s, %.2f s", table.estimator, time.perf_counter() - t0)
    if kv_bits:
        from .kv_cache import check_kv_request

        check_kv_request(kv_bits, context_tokens)
        if constraints.get("max_avg_bits") is not None:
            raise DocumentError("budget avg_bits counts weights per weight; with --kv-bits budget the weights and the "
                                "KV cache together in bytes (--budget mb= or bytes=)")
    problem = build_problem(graph, table, candidates, constraints, channel_groups=channel_groups, latency=latency, target=target,
                            routing_weight=routing_weight, layers=graph.names)
    if kv_bits:
        from .kv_cache import kv_problem_layers

        device = dict(estimator_settings or {}).get("device", "cpu")
        kv = kv_problem_layers(workload, kv_bits, context_tokens, device=device, latency=latency is not None)
        problem = Problem.model_validate({**problem.model_dump(by_alias=True), "layers": [*problem.model_dump()["layers"],
                                                                                         *(l.model_dump() for l in kv)]})
    if target is not None:
        targets.check_budget(target, problem)
    LOG.debug("problem: %d layers x up to %d options, constraints %s", len(problem.layers),
              max(len(l.options) for l in problem.layers), problem.constraints.active())
    prov = Provenance(estimator=table.estimator, model=problem.model, target=target)
    plan = solve.solve(problem, provenance=prov)
    LOG.debug("solver %s: %s in %.3f s", plan.solver.name, plan.solver.status, plan.solver.seconds)
    refinement = None
    # bisection already judges plans by the measured metric; activation quantization needs calibrated ranges per plan
    # (and the KV cache is not a weight that a plan applies)
    if refine and solver != "bisection" and all(a is None for a in candidates.a_bits) and not kv_bits:
        from mpq.incremental import IncrementalObjective
        from mpq.refine import floor_plans, refine_plan

        with IncrementalObjective(workload) as objective:  # the measured objective, re-running only what a move changes
            refinement = refine_plan(problem, plan, objective, max_evals=refine, seed=seed,
                                     alternatives=floor_plans(problem, solver))
        plan = refinement.plan
    result = PlanResult(graph, table, problem, plan, refinement)
    if priced is not None and channel_groups == 1:
        overhead = timing.overhead_ms if timing else 0.0
        result.latency_overhead_ms = overhead if timing else None
        layers = [l for l in plan.layers if l.name in priced]  # KV-cache entries take no modeled time
        result.predicted_latency_ms = sum(priced[l.name][l.option][0] for l in layers) + overhead
        result.latency_spread_ms = sum(priced[l.name][l.option][1] for l in layers) + (timing.spread_ms if timing else 0.0)
    return result
