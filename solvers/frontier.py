"""The exact Pareto frontier of size against distortion, in one DP pass (HAWQ-V2, ZeroQ).

``frontier(problem)`` is the one function the CLI (``mpq frontier``) and the HTTP service
(:func:`frontier_plans`, ``POST /v1/frontiers``) call, and :class:`FrontierPoint` their one point type.
Every point is a plan: the least distortion reachable at its size, and each point is strictly
smaller in distortion than every smaller point (monotone). Sizes are exact integers (bytes, bits
or BitOps), so there is no binning and no point that a finer grid would beat.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from pydantic import BaseModel, ConfigDict, Field

from mpq.errors import SolverNotApplicable
from mpq.schema import AXES, Constraints, Plan, Problem, SolverInfo

from .compiled import Compiled, compile_problem, to_resource_units
from ._dp import pareto_dp


class FrontierPoint(BaseModel):
    """One frontier point: its size, its least distortion, the choice reaching it; the CLI's and the service's point."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, defer_build=True)

    bytes: int
    avg_bits: float
    distortion: float
    within_budget: bool = Field(description="meets every constraint of the problem")
    choice: dict[str, str] = Field(description="layer name -> option id")


@dataclass
class Frontier:
    axis: str
    points: list[FrontierPoint]  # ascending size, strictly descending distortion

    def plan(self, problem: Problem, index: int, solver: str = "frontier") -> Plan:
        """The ``mpq.plan/v1`` of one point (totals recounted as :mod:`mpq.sizes` counts them)."""
        from mpq.plan import build_plan

        p = self.points[index]
        info = SolverInfo(name=solver, status="optimal", objective=p.distortion, bound=p.distortion, gap=0.0)
        return build_plan(problem, p.choice, info)


def measured(problem: Problem, axis: str) -> Compiled:
    """Compile with the frontier's axis (and bytes and bits for the totals) as resources, uncapped."""
    if axis not in AXES:
        raise SolverNotApplicable(f"frontier axis must be one of {sorted(AXES)}, got {axis!r}")
    if problem.pairs:
        raise SolverNotApplicable(
            f"the frontier DP is exact for additive distortions; this problem has {len(problem.pairs)} pair terms "
            "(solve each budget with --solver ilp instead)"
        )
    wide = {n: 1e300 for n in {"max_bytes", "max_avg_bits", AXES[axis]}}
    return compile_problem(problem.model_copy(update={"constraints": Constraints(**wide)}))


def frontier(problem: Problem, axis: str = "bytes", *, within_budget: bool = False, max_points: Optional[int] = None,
             max_states: Optional[int] = 2_000_000) -> Frontier:
    """The whole size/distortion frontier (or only its part within the problem's budget on ``axis``).

    ``max_points`` thins the list evenly along the size axis (keeping both ends); the DP itself is
    always exact. Raises :class:`SolverNotApplicable` for pairwise terms.
    """
    cp = measured(problem, axis)
    name = AXES[axis]
    cap = np.inf
    if within_budget and name in problem.constraints.active():
        v = problem.constraints.active()[name]
        cap = to_resource_units(name, v, problem.total_params)
    front = pareto_dp(cp.cost, [np.asarray(r, dtype=np.int64) for r in cp.resources[name]], cap, max_states=max_states)
    idx = np.arange(len(front.cost))
    if max_points is not None and len(idx) > max_points >= 2:
        idx = np.unique(np.round(np.linspace(0, len(idx) - 1, max_points)).astype(int))
    limits = problem.constraints.active()
    params = problem.total_params
    points = []
    for i in idx:
        choice = front.choice(int(i))
        use = cp.usage(choice)
        by_layer = {n: cp.option_ids[g][int(choice[g])] for g, names in enumerate(cp.groups) for n in names}
        byt, bits = int(use["max_bytes"]), use["max_avg_bits"]
        totals = {"max_bytes": byt, "max_avg_bits": bits / params if params else 0.0}
        ok = all(totals.get(n, None) is None or totals[n] <= v * (1 + 1e-12) for n, v in limits.items() if n in totals)
        if any(n not in totals for n in limits):
            ok = ok and _meets_others(problem, by_layer, limits)
        points.append(FrontierPoint(bytes=byt, avg_bits=totals["max_avg_bits"], distortion=float(front.cost[i]),
                                    within_budget=ok, choice=by_layer))
    return Frontier(axis, points)


def _meets_others(problem: Problem, choice: dict[str, str], limits: dict[str, float]) -> bool:
    from mpq.plan import build_plan, violations

    plan = build_plan(problem, choice, SolverInfo(name="frontier", status="feasible", objective=0.0))
    return not violations(plan.totals, limits)


def knee(sizes: np.ndarray, distortions: np.ndarray) -> int:
    """The point farthest below the chord joining the two ends (both axes scaled to [0, 1])."""
    if len(sizes) <= 2:
        return 0
    x = (sizes - sizes[0]) / max(sizes[-1] - sizes[0], 1e-300)
    y = (distortions - distortions[-1]) / max(distortions[0] - distortions[-1], 1e-300)
    # chord from (0, 1) to (1, 0): distance below it is proportional to 1 - x - y
    return int(np.argmax(1 - x - y))


def frontier_plans(problem: Problem, max_points: int) -> list[Plan]:
    """Up to ``max_points`` Pareto-optimal plans within the problem's single size-like budget, smallest first.

    With several budgets the frontier along one of them is not the optimum under all, so such
    problems are refused rather than answered with points that another plan would beat.
    """
    active = problem.constraints.active()
    axes = [a for a, c in AXES.items() if c in active]
    if len(active) != 1 or not axes:
        raise SolverNotApplicable(
            "a frontier needs exactly one size-like budget (max_bytes, max_avg_bits or max_bitops); "
            f"this problem has {sorted(active)}: solve each budget with POST /v1/plans instead"
        )
    compile_problem(problem).check_feasible()  # an infeasible budget names the smallest feasible one
    front = frontier(problem, axes[0], within_budget=True, max_points=max_points)
    return [front.plan(problem, i, solver="dp") for i, p in enumerate(front.points) if p.within_budget]
