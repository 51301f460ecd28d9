"""The ``greedy`` baseline solver (MPTQ-ViT); the algorithm is :func:`mpq.solvers._greedy.greedy_choice`."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from mpq.errors import PlanInfeasible

from ._greedy import greedy_choice
from .base import Solution, Solver, register_solver
from .compiled import Compiled


@register_solver
class GreedySolver(Solver):
    """Baseline (MPTQ-ViT): greedily lower the layer with the least distortion per byte saved (or raise, direction='up')."""

    name = "greedy"

    class Settings(Solver.Settings):
        direction: Literal["down", "up"] = Field("down", description="lower from the largest options, or raise from the smallest")

    def _solve(self, cp: Compiled) -> Solution:
        choice = greedy_choice(cp, self.direction)
        if choice is None:
            minimum = {n: cp.cap_value(n, cp.min_resource(n)) for n in cp.caps}
            raise PlanInfeasible(
                "greedy found no plan within every budget together (each alone can be met; try --solver ilp); "
                "smallest budget of each alone: " + ", ".join(f"{n}={v:g}" for n, v in minimum.items()),
                minimum,
            )
        bound = None
        if len(cp.caps) == 1 and not cp.pairs:
            from ._mckp import relaxation_bound

            (name, cap), = cp.arrays.caps.items()
            bound = relaxation_bound(cp.arrays.cost, cp.arrays.resources[name], cap)
        return Solution(choice, "feasible", bound)
