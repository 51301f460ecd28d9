"""The ``lagrangian`` solver: one budget at any scale; the algorithm is :func:`mpq.solvers._mckp.solve_mckp`."""
from __future__ import annotations

from typing import Optional

from pydantic import Field

from mpq.errors import SolverNotApplicable
from mpq.settings import Count

from ._mckp import MCKPResult, solve_mckp
from .base import Solution, Solver, register_solver
from .compiled import Compiled


@register_solver
class LagrangianSolver(Solver):
    """One budget at any scale: Lagrangian over convex hulls, exact core; proven optimal or a certified gap.

    The core DP proves most instances optimal by itself. When it cannot (the core is too large),
    ``prove=True`` hands the core to HiGHS within the time limit; otherwise the status is
    ``feasible`` with the best certified bound.
    """

    name = "lagrangian"
    exact = True

    class Settings(Solver.Settings):
        prove: bool = Field(False, description="solve the undecided core exactly, so the status is always optimal")
        core_groups: Count = Field(1024, description="groups left undecided around the multiplier that the exact core solves")

    last: Optional[MCKPResult] = None  # the last solve's multiplier, bound and core (set by _solve)

    def _solve(self, cp: Compiled) -> Solution:
        if len(cp.caps) != 1 or cp.pairs:
            raise SolverNotApplicable(
                "lagrangian is exact for a single budget without pairwise terms; "
                f"this problem has constraints {sorted(cp.caps)} and {len(cp.pairs)} pair terms: use --solver ilp"
            )
        arrays = cp.arrays
        (name, cap), = arrays.caps.items()
        res = solve_mckp(arrays.cost, arrays.resources[name], cap, arrays.n_options,
                         prove=self.prove, core_groups=self.core_groups, time_limit_s=self.time_limit_s)
        self.last = res
        if res.optimal:  # proven by the exact core: the bound is the optimum (the LP bound stays in self.last.lp_bound)
            return Solution(res.choice, "optimal", res.objective)
        return Solution(res.choice, "feasible", res.bound)
