"""The ``dp`` solver: the exact frontier under one size-like budget, and its least-distortion point."""
from __future__ import annotations

import time

import numpy as np

from ._dp import FrontierTooLarge, budget_frontier
from .base import Solution, Solver, register_solver
from .compiled import Compiled


@register_solver
class DPSolver(Solver):
    """Exact DP over the Pareto frontier for one size-like budget (bytes, avg_bits or bitops)."""

    name = "dp"
    exact = True

    def _solve(self, cp: Compiled) -> Solution:
        deadline = None if self.time_limit_s is None else time.perf_counter() + self.time_limit_s
        try:
            front = budget_frontier(cp, "dp is exact for", deadline=deadline)
        except FrontierTooLarge:
            return self._out_of_time(cp)
        best = int(np.argmin(front.cost))
        choice = front.choice(best)
        return Solution(choice, "optimal", float(front.cost[best]))

    def _out_of_time(self, cp: Compiled) -> Solution:
        """Past the time limit: the greedy plan, ``feasible`` with the relaxation's proven bound (milliseconds)."""
        from .greedy import GreedySolver

        sol = GreedySolver()._solve(cp)
        return Solution(sol.choice, "feasible", sol.bound)
