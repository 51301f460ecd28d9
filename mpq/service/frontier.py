"""The size/distortion frontier of a problem, as plans.

This is the one place the service computes a frontier. Until ``mpq.solvers`` has its own frontier
function, it runs the exact DP (``pareto_dp``) over the compiled problem, which needs a single
size-like budget; switch this function when that lands.
"""
from __future__ import annotations

import numpy as np

from mpq.errors import SolverNotApplicable
from mpq.schema import Plan, Problem, SolverInfo
from mpq.solvers.compiled import compile_problem
from mpq.solvers.dp import dp_applicable, pareto_dp


def frontier_plans(problem: Problem, max_points: int) -> list[Plan]:
    """Up to ``max_points`` Pareto-optimal plans within the problem's budget, smallest first."""
    if not dp_applicable(problem):
        raise SolverNotApplicable(
            "a frontier needs exactly one size-like budget (max_bytes, max_avg_bits or max_bitops) and no pairwise "
            f"terms; this problem has constraints {sorted(problem.constraints.active())} and {len(problem.pairs)} pairs"
        )
    cp = compile_problem(problem)
    cp.check_feasible()
    (name, cap), = cp.caps.items()
    front = pareto_dp(cp.cost, [np.asarray(r, dtype=np.int64) for r in cp.resources[name]], cap)
    n = len(front.weight)
    picks = sorted(set(np.linspace(0, n - 1, num=min(n, max_points)).round().astype(int).tolist()))
    plans = []
    for i in picks:
        cost = float(front.cost[i])
        info = SolverInfo(name="dp", status="optimal", objective=cost, bound=cost, gap=0.0)
        plans.append(cp.plan(front.choice(i), info))
    return plans
