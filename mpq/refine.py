"""Measured refinement: improve a plan by swap moves judged on the whole quantized model, not the additive sum.

Per-layer sensitivities add up the damage of layers quantized one at a time; on real models the
errors of low-bit layers compound, and the additive optimum can lose to simpler plans on the task
(measured: the single-layer DP beats uniform 4-bit on cosine and loses on retrieval). Refinement
starts from the additive optimum (the seed) and tries moves that the additive model rates nearly
free: one group of layers (a layer, or a tie) one step up its size-ordered efficient options and
another down by the nearest step that makes room for it (up to :data:`DOWN_STEPS` steps: on a mixed
grid one step may only drop scales), or one step up alone when the budget has room. Each move is applied to the
whole model and measured with ``objective(plan)`` (e.g. the mean calibration loss of the model
quantized by the plan); a move is kept only when it lowers the measured objective.

Honest by construction: every move is checked against every constraint before it is measured (a
plan over budget is never evaluated nor returned); the result is the seed unless a measured
improvement was found, so it is never worse than the seed on the objective; the order of moves is
a pure function of the problem, the plan and ``seed`` (which only breaks exact ties), so a
deterministic objective gives a deterministic result. ``max_evals`` bounds the cost: one objective
evaluation each, the seed's included.
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from .errors import DocumentError
from .plan import build_plan, violations
from .schema import Plan, Problem, SolverInfo, Totals

#: steps down another group may take to make room for one group's step up
DOWN_STEPS = 3


@dataclass
class Refinement:
    """The refined plan and what it cost: objective of the seed and the result, evaluations, seconds."""

    plan: Plan
    seed_objective: float
    objective: float
    evaluations: int
    accepted: int
    seconds: float
    history: list[dict] = field(default_factory=list)
    objective_name: str = "measured objective"

    def summary(self) -> dict:
        return {"objective_name": self.objective_name, "seed_objective": self.seed_objective, "objective": self.objective,
                "evaluations": self.evaluations, "accepted": self.accepted, "seconds": round(self.seconds, 3)}


def _groups(problem: Problem) -> list[list[str]]:
    """Layers that must move together: each tie once, every other layer alone, in problem order."""
    tied: dict[str, int] = {}
    groups: list[list[str]] = []
    for tie in problem.ties:
        members = [n for n in tie if n not in tied]
        idx = {tied[n] for n in tie if n in tied}
        if idx:  # a layer in two ties joins them
            keep = min(idx)
            for i in sorted(idx - {keep}, reverse=True):
                groups[keep].extend(groups[i])
                groups[i] = []
            groups[keep].extend(members)
            for n in groups[keep]:
                tied[n] = keep
        else:
            groups.append(list(members))
            for n in members:
                tied[n] = len(groups) - 1
    out = [g for g in groups if g]
    out.extend([l.name] for l in problem.layers if l.name not in tied)
    return out


def _ladders(problem: Problem, groups: list[list[str]]) -> list[list[str]]:
    """For each group, its option ids ordered by size, keeping only those that the additive model does not dominate."""
    layers = {l.name: l for l in problem.layers}
    ladders = []
    for g in groups:
        ids = [o.id for o in layers[g[0]].options]
        for name in g[1:]:
            ids = [i for i in ids if i in {o.id for o in layers[name].options}]
        cost = {i: (sum(layers[n].option(i).bytes for n in g), sum(layers[n].option(i).distortion for n in g)) for i in ids}
        ordered = sorted(ids, key=lambda i: (cost[i][0], cost[i][1], i))
        ladder, best = [], float("inf")
        for i in ordered:
            if cost[i][1] < best:
                ladder.append(i)
                best = cost[i][1]
        ladders.append(ladder)
    return ladders


def _restricted(problem: Problem, keep: Callable[[Any, Any], bool], solver: str) -> Plan | None:
    """The additive optimum over the options ``keep(layer, option)`` accepts (float always stays); None when no plan fits."""
    from mpq.errors import PlanInfeasible
    from mpq.solvers import get_solver

    layers = []
    for l in problem.layers:
        options = [o for o in l.options if o.format == "float" or keep(l, o)]
        if not options:
            return None
        layers.append(l.model_copy(update={"options": options}))
    by_name = {l.name: l for l in layers}
    if any(not set.intersection(*({o.id for o in by_name[n].options} for n in tie)) for tie in problem.ties):
        return None  # a tie whose layers no longer share an option (the problem's own rule)
    kept = {(l.name, o.id) for l in layers for o in l.options}
    pairs = [p for p in problem.pairs if (p.a, p.option_a) in kept and (p.b, p.option_b) in kept]
    try:
        return get_solver(solver).solve(problem.model_copy(update={"layers": layers, "pairs": pairs}), provenance=None)
    except PlanInfeasible:
        return None


def floor_plans(problem: Problem, solver: str = "auto") -> list[Plan]:
    """Additive optima that avoid where the additive model misleads, and uniform.

    - For each bit floor the budget allows, the optimum with every layer at or above it: low-bit
      layers are where errors compound.
    - Where the grid mixes granularities (per channel and groups), the optimum with every quantized
      layer at one group size (a layer with no option at that size keeps its per-channel ones): the
      additive model misjudges per channel against groups as it misjudges low bits (all-MiniLM-L6-v2
      at 4 bits: from the all-group-128 optimum refinement reached 0.0534 of calibration 1-cos, from
      the mixed seed 0.0589; benchmarks/plan_quality.py).
    - The largest uniform option that fits: the last resort of any budget.

    Each is still exact for the additive model within its restriction.
    """
    plans = []
    bits = sorted({o.w_bits for l in problem.layers for o in l.options if o.format != "float"})
    for floor in bits[1:]:
        plan = _restricted(problem, lambda l, o: o.w_bits >= floor, solver)
        if plan is None:
            break
        plans.append(plan)
    groups = sorted({o.group_size or 0 for l in problem.layers for o in l.options if o.format != "float"})
    if len(groups) > 1:
        for g in sorted(groups, key=lambda g: (g == 0, g)):  # the finest groups first, per channel (0) last
            plan = _restricted(problem, lambda l, o: (o.group_size or 0) == g
                               or (o.group_size is None and all((p.group_size or 0) != g for p in l.options)), solver)
            if plan is not None:
                plans.append(plan)
    common = set.intersection(*({o.id for o in l.options if o.format != "float"} for l in problem.layers))
    fits = []
    for oid in common:
        choice = {l.name: oid for l in problem.layers}
        plan = build_plan(problem, choice, SolverInfo(name="uniform", status="feasible", objective=0.0))
        if not violations(plan.totals, problem.constraints):
            fits.append(plan)
    if fits:
        plans.append(max(fits, key=lambda p: (p.totals.bytes, -p.totals.distortion)))
    return plans


def refine_plan(
    problem: Problem,
    plan: Plan,
    objective: Callable[[Plan], float],
    *,
    max_evals: int = 12,
    seed: int = 0,
    alternatives: Sequence[Plan] = (),
) -> Refinement:
    """Swap-move local search on the measured ``objective``; never over budget, never worse than ``plan``.

    ``alternatives`` (e.g. :func:`floor_plans`) are measured first, within ``max_evals``; the search
    starts from the best of ``plan`` and them.
    """
    if max_evals < 1:
        raise DocumentError(f"refinement: max_evals must be at least 1 (the seed's own evaluation), got {max_evals}")
    t0 = time.perf_counter()
    layers = {l.name: l for l in problem.layers}
    choice = {l.name: l.option for l in plan.layers}
    missing = [name for name in layers if name not in choice]
    if missing:
        raise DocumentError(f"refinement: the plan has no option for layer {missing[0]!r} of the problem")
    groups = _groups(problem)
    ladders = _ladders(problem, groups)
    info = plan.solver

    def make(ch: dict[str, str]) -> Plan:
        return build_plan(problem, ch, info, provenance=plan.provenance)

    def distortion(gi: int, oid: str) -> float:
        return sum(layers[n].option(oid).distortion for n in groups[gi])

    params = sum(l.params for l in problem.layers)
    usage: dict[tuple[int, str], tuple] = {}

    def use(gi: int, oid: str) -> tuple:
        """What the group takes of each budgeted total at ``oid``: bytes, bits, BitOps, latency (None: unknown)."""
        if (gi, oid) not in usage:
            opts = [layers[n].option(oid) for n in groups[gi]]
            usage[gi, oid] = (sum(o.bytes for o in opts), sum(o.bits if o.bits is not None else 8 * o.bytes for o in opts),
                              None if any(o.bitops is None for o in opts) else sum(o.bitops for o in opts),
                              None if any(o.latency_ms is None for o in opts) else sum(o.latency_ms for o in opts))
        return usage[gi, oid]

    def steps(gi: int, oid: str) -> tuple[str | None, list[str]]:
        """The group's next option up its ladder, and the options down it, nearest first. An option off the
        ladder (one the additive model dominates, as a one-granularity alternative may hold) steps up to the
        nearest ladder option larger than it, and down from the largest one no larger (which dominates it)."""
        ladder = ladders[gi]
        if oid in ladder:
            p = ladder.index(oid)
            return ladder[p + 1] if p + 1 < len(ladder) else None, ladder[:p][::-1]
        here = use(gi, oid)[0]
        return (next((i for i in ladder if use(gi, i)[0] > here), None),
                [i for i in reversed(ladder) if use(gi, i)[0] <= here])

    caps = problem.constraints.active()

    def fits(base: list, move: tuple) -> bool:
        """Whether the plan with ``move`` applied fits every constraint (``base``: the current plan's sums)."""
        t = list(base)
        for gi, oid in move:
            old, new = use(gi, choice[groups[gi][0]]), use(gi, oid)
            t = [None if a is None or b is None or c is None else a - b + c for a, b, c in zip(t, old, new)]
        totals = Totals.model_construct(bytes=t[0], avg_bits=t[1] / params if params else 0.0, bitops=t[2], latency_ms=t[3],
                                        distortion=0.0)
        return not violations(totals, caps)

    best = objective(plan)
    seed_value, evaluations, accepted, history = best, 1, 0, []
    current = plan
    tried: set[tuple] = {tuple(sorted(choice.items()))}
    for alt in alternatives:
        alt_choice = {l.name: l.option for l in alt.layers}
        key = tuple(sorted(alt_choice.items()))
        if evaluations >= max_evals or key in tried or set(alt_choice) != set(choice):
            continue
        candidate = make(alt_choice)
        if violations(candidate.totals, problem.constraints):
            continue
        tried.add(key)
        value = objective(candidate)
        evaluations += 1
        history.append({"start": alt.solver.name, "objective": value, "accepted": value < best})
        if value < best:
            best, choice, current, accepted = value, alt_choice, candidate, accepted + 1
    rng = random.Random(seed)
    while evaluations < max_evals:
        moves = []
        near = [steps(gi, choice[g[0]]) for gi, g in enumerate(groups)]
        held = [use(gi, choice[g[0]]) for gi, g in enumerate(groups)]
        base = [None if any(u[k] is None for u in held) else sum(u[k] for u in held) for k in range(4)]
        for gi, (up, _) in enumerate(near):
            if up is None:
                continue
            d_up = distortion(gi, up) - distortion(gi, choice[groups[gi][0]])
            if fits(base, ((gi, up),)):
                moves.append((d_up, rng.random(), ((gi, up),)))
            for gj, (_, downs) in enumerate(near):
                # the other group's nearest step down that makes room for the step up (up to DOWN_STEPS steps):
                # on a mixed grid one step down may only drop scales while one step up adds a bit
                if gj == gi:
                    continue
                for down in downs[:DOWN_STEPS]:
                    if fits(base, ((gi, up), (gj, down))):
                        d_down = distortion(gj, down) - distortion(gj, choice[groups[gj][0]])
                        moves.append((d_up + d_down, rng.random(), ((gi, up), (gj, down))))
                        break
        moves.sort(key=lambda m: (m[0], m[1]))
        improved = False
        for _, _, move in moves:
            trial = dict(choice)
            for gi, oid in move:
                for n in groups[gi]:
                    trial[n] = oid
            key = tuple(sorted(trial.items()))
            if key in tried:
                continue
            candidate = make(trial)
            if violations(candidate.totals, problem.constraints):
                continue
            tried.add(key)
            value = objective(candidate)
            evaluations += 1
            history.append({"move": [[groups[gi][0], oid] for gi, oid in move], "objective": value, "accepted": value < best})
            if value < best:
                best, choice, current, accepted, improved = value, trial, candidate, accepted + 1, True
                break
            if evaluations >= max_evals:
                break
        if not improved:
            break
    if accepted:
        # the additive objective of the refined plan, against the seed's proven bound
        obj = current.totals.distortion
        gap = max(0.0, (obj - info.bound) / max(abs(obj), 1e-300)) if info.bound is not None and obj else None
        current = current.model_copy(update={"solver": SolverInfo(
            name=f"{info.name}+refine", status="feasible", objective=obj, bound=info.bound, gap=gap,
            seconds=round(info.seconds + time.perf_counter() - t0, 6))})
    return Refinement(plan=current, seed_objective=seed_value, objective=best, evaluations=evaluations,
                      accepted=accepted, seconds=time.perf_counter() - t0, history=history)
