"""Pick a point of the exact size/distortion frontier by rule (HAWQ-V2, ZeroQ).

``rule="budget"`` (default): the least distortion within the budget (the same optimum as ``dp``).
``rule="knee"``: the frontier point (within the budget) farthest below the chord of its ends,
where more size stops buying much distortion. ``rule="max_distortion"``: the smallest plan whose
distortion is at most ``max_distortion``. The knee and the distortion-limited point are not the
least-distortion plan, so they report ``feasible`` with that plan's distortion as the bound: the
gap says how much distortion the rule traded for size.
"""
from __future__ import annotations

from typing import Literal, Optional

import numpy as np

from pydantic import Field, model_validator

from mpq.errors import PlanInfeasible
from mpq.settings import Real

from .base import Solution, Solver, register_solver
from .compiled import Compiled
from ._dp import budget_frontier, pareto_dp
from .frontier import knee

RULES = ("budget", "knee", "max_distortion")


@register_solver
class ParetoSolver(Solver):
    """Exact frontier, then a point by rule: under the budget, the knee, or the smallest within max_distortion."""

    name = "pareto"
    exact = True

    class Settings(Solver.Settings):
        rule: Literal[RULES] = Field("budget", description="which frontier point: least distortion within the budget, "
                                     "the knee, or the smallest within max_distortion")
        max_distortion: Optional[Real] = Field(None, description="the distortion cap of rule max_distortion")

        @model_validator(mode="after")
        def _cap_for_its_rule(self):
            if self.rule == "max_distortion" and self.max_distortion is None:
                raise ValueError("rule 'max_distortion' needs max_distortion=<finite number>")
            return self

    def _solve(self, cp: Compiled) -> Solution:
        import time

        from mpq.errors import TimeLimitReached

        from ._dp import FrontierTooLarge

        deadline = None if self.time_limit_s is None else time.perf_counter() + self.time_limit_s
        try:
            front = budget_frontier(cp, "pareto walks the frontier of", deadline=deadline)
        except FrontierTooLarge as e:
            raise TimeLimitReached(f"pareto: the exact frontier did not finish within time_limit_s={self.time_limit_s:g} ({e}); "
                                   "raise the time limit, or use --solver dp or lagrangian for the budget alone") from None
        if self.rule == "budget":
            i = int(np.argmin(front.cost))
            return Solution(front.choice(i), "optimal", float(front.cost[i]))
        if self.rule == "knee":
            i = knee(front.weight.astype(np.float64), front.cost)
            return Solution(front.choice(i), "feasible", float(front.cost.min()))
        ok = np.flatnonzero(front.cost <= self.max_distortion)
        if ok.size == 0:
            (name, _), = cp.caps.items()
            full = pareto_dp(cp.cost, [np.asarray(r, dtype=np.int64) for r in cp.resources[name]])
            reach = np.flatnonzero(full.cost <= self.max_distortion)
            need = cp.cap_value(name, float(full.weight[reach[0]])) if reach.size else None
            msg = (f"no plan within {name}={cp.limits[name]:g} has distortion <= {self.max_distortion:g} "
                   f"(the least within the budget is {front.cost.min():.6g})")
            if need is not None:
                msg += f"; the smallest plan meeting it needs {name}={need:.6g}"
            raise PlanInfeasible(msg, {name: need} if need is not None else {})
        i = int(ok[0])  # ascending size: the first point within the limit is the smallest
        return Solution(front.choice(i), "feasible", float(front.cost.min()))
