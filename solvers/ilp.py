"""Integer linear program (Hubara et al.; MixDQ; LQ-LoRA): one-hot binaries per decision group.

Every constraint at once, ties (merged into one group), and pairwise terms linearized exactly:
``y >= x_a + x_b - 1``, ``y <= x_a``, ``y <= x_b`` for the product of two binaries. CBC (bundled
with PuLP) by default, HiGHS through ``highspy`` with ``backend="highs"``.
"""
from __future__ import annotations

import numpy as np
import pulp

from mpq.errors import PlanInfeasible, SolverFailed

from .base import Solution, Solver, register_solver
from .compiled import Compiled


@register_solver
class ILPSolver(Solver):
    """Exact integer program (PuLP: CBC, or HiGHS): any constraints, ties and pairwise terms."""

    name = "ilp"
    exact = True

    def __init__(self, *, time_limit_s=None, backend: str = "cbc", gap_rel: float = 1e-9, warm_start: bool = False, **settings):
        super().__init__(time_limit_s=time_limit_s, **settings)
        if backend not in ("cbc", "highs"):
            raise ValueError(f"ilp backend must be 'cbc' or 'highs', got {backend!r}")
        self.backend, self.gap_rel, self.warm_start = backend, gap_rel, warm_start

    def _solve(self, cp: Compiled) -> Solution:
        scale = max((float(np.abs(c).max()) for c in cp.cost if len(c)), default=1.0) or 1.0
        prob = pulp.LpProblem("mpq", pulp.LpMinimize)
        x = [[pulp.LpVariable(f"x_{g}_{k}", cat="Binary") for k in range(len(cp.cost[g]))] for g in range(cp.n_groups)]
        terms = [(x[g][k], float(cp.cost[g][k]) / scale) for g in range(cp.n_groups) for k in range(len(cp.cost[g]))]
        for i, (ga, ka, gb, kb, d) in enumerate(cp.pairs):
            y = pulp.LpVariable(f"y_{i}", lowBound=0, upBound=1)
            prob += y >= x[ga][ka] + x[gb][kb] - 1
            prob += y <= x[ga][ka]
            prob += y <= x[gb][kb]
            terms.append((y, d / scale))
        prob += pulp.LpAffineExpression(terms)
        for g in range(cp.n_groups):
            prob += pulp.lpSum(x[g]) == 1, f"one_option_{g}"
        for name, cap in cp.caps.items():
            res = cp.resources[name]
            prob += (
                pulp.LpAffineExpression([(x[g][k], float(res[g][k])) for g in range(cp.n_groups) for k in range(len(res[g]))]) <= cap,
                f"cap_{name}",
            )
        if self.backend == "highs":
            solver = pulp.HiGHS(msg=False, timeLimit=self.time_limit_s, gapRel=self.gap_rel)
        else:
            solver = pulp.PULP_CBC_CMD(msg=False, timeLimit=self.time_limit_s, gapRel=self.gap_rel)
        prob.solve(solver)
        status = pulp.LpStatus[prob.status]
        if status == "Infeasible":
            minimum = {n: cp.cap_value(n, cp.min_resource(n)) for n in cp.caps}
            raise PlanInfeasible(
                "the constraints are infeasible together, although each alone can be met; smallest budget of each alone: "
                + ", ".join(f"{n}={v:g}" for n, v in minimum.items()),
                minimum,
            )
        choice = np.full(cp.n_groups, -1)
        for g in range(cp.n_groups):
            values = [v.varValue or 0.0 for v in x[g]]
            choice[g] = int(np.argmax(values))
            if values[choice[g]] < 0.5:
                raise SolverFailed(f"ILP ({self.backend}) returned no integral solution (status {status}); raise the time limit")
        # CBC reports "Optimal" within gap_rel; a time-limited stop with an incumbent is "feasible"
        optimal = status == "Optimal" and prob.sol_status == pulp.LpSolutionOptimal
        return Solution(choice, "optimal" if optimal else "feasible", None)
