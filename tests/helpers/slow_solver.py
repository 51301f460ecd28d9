"""A test plugin for the service (``--plugin tests.helpers.slow_solver``): an exact answer, delivered slowly.

It solves with the DP at once, then takes ``steps * step_s`` seconds reporting progress with the
best plan, honouring ``should_stop`` like the evolutionary solver does.
"""
from __future__ import annotations

import time

from mpq.schema import SolverInfo
from mpq.solvers.base import Solution, Solver, register_solver
from mpq.solvers.dp import DPSolver


@register_solver
class SlowSolver(Solver):
    """Test solver: the DP's plan after a delay, with progress and cancellation."""

    name = "slow-test"
    exact = True

    def __init__(self, *, time_limit_s=None, progress=None, should_stop=None, steps: int = 20, step_s: float = 0.1, **settings):
        super().__init__(time_limit_s=time_limit_s, **settings)
        self.progress, self.should_stop, self.steps, self.step_s = progress, should_stop, steps, step_s

    def _solve(self, cp):
        sol = DPSolver()._solve(cp)
        best = cp.plan(sol.choice, SolverInfo(name=self.name, status="feasible", objective=cp.objective(sol.choice)))
        for i in range(self.steps):
            if self.should_stop is not None and self.should_stop():
                break
            time.sleep(self.step_s)
            if self.progress is not None:
                self.progress((i + 1) / self.steps, best)
        return Solution(sol.choice, "optimal", sol.bound)
