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
        """Past the time limit: the greedy plan, ``feasible`` with a Lagrangian bound (milliseconds)."""
        from ._greedy import greedy_choice

        return Solution(greedy_choice(cp), "feasible", dual_bound(cp))


def dual_bound(cp: Compiled, steps: int = 60) -> float:
    """A proven lower bound on the least distortion under the one budget: ``max over lam >= 0`` of
    ``sum_g min_o (c_go + lam w_go) - lam cap`` (concave in ``lam``, searched by golden section)."""
    (name, cap), = cp.caps.items()
    width = max(len(c) for c in cp.cost)
    C = np.full((len(cp.cost), width), np.inf)
    W = np.zeros_like(C)
    for g, (c, w) in enumerate(zip(cp.cost, cp.resources[name])):
        C[g, : len(c)], W[g, : len(w)] = c, w

    def value(lam: float) -> float:
        return float(np.min(C + lam * W, axis=1).sum() - lam * cap)

    spread = np.ptp(np.where(np.isfinite(C), C, np.nan), axis=1)
    lo, hi = 0.0, float(np.nansum(spread)) / max(float(cap), 1e-300) + 1.0
    ratio = (5 ** 0.5 - 1) / 2
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = value(a), value(b)
    for _ in range(steps):
        if fa < fb:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = value(b)
        else:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = value(a)
    return max(value(0.0), fa, fb)
