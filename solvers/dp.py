"""The ``dp`` solver: the exact frontier under one size-like budget, and its least-distortion point."""
from __future__ import annotations

import numpy as np

from ._dp import budget_frontier
from .base import Solution, Solver, register_solver
from .compiled import Compiled


@register_solver
class DPSolver(Solver):
    """Exact DP over the Pareto frontier for one size-like budget (bytes, avg_bits or bitops)."""

    name = "dp"
    exact = True

    def _solve(self, cp: Compiled) -> Solution:
        front = budget_frontier(cp, "dp is exact for")
        best = int(np.argmin(front.cost))
        choice = front.choice(best)
        return Solution(choice, "optimal", float(front.cost[best]))
