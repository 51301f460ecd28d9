"""A test plugin for the service (``--plugin tests.helpers.slow_solver``): an exact answer, delivered slowly.

It solves with the DP at once, then takes ``steps * step_s`` seconds reporting progress with the
best plan, honouring ``should_stop`` like the evolutionary solver does.
"""
from __future__ import annotations

import time

from mpq.schema import SolverInfo
from mpq.settings import Count, Hook, PosReal
from mpq.solvers.base import Solution, Solver, register_solver
from mpq.solvers.dp import DPSolver


@register_solver
class SlowSolver(Solver):
    """Test solver: the DP's plan after a delay, with progress and cancellation."""

    name = "slow-test"
    exact = True

    class Settings(Solver.Settings):
        progress: Hook = None
        should_stop: Hook = None
        steps: Count = 20
        step_s: PosReal = 0.1

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
