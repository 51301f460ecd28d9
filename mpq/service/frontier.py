"""The size/distortion frontier of a problem, as plans: the service's one call into ``mpq.solvers.frontier``."""
from __future__ import annotations

from mpq.errors import SolverNotApplicable
from mpq.schema import AXES, Plan, Problem
from mpq.solvers.compiled import compile_problem
from mpq.solvers.frontier import frontier


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
