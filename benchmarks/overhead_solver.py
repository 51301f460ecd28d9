"""Benchmark plugin (``mpq serve --plugin overhead_solver``): a solver that costs nothing.

It picks each group's smallest option, so ``service_load.py --overhead`` measures what the service
itself costs per request (HTTP, validation, compiling the problem, building and storing the plan),
apart from the optimizer.
"""
from __future__ import annotations

import numpy as np

from mpq.solvers.base import Solution, Solver, register_solver


@register_solver
class SmallestOptionSolver(Solver):
    """Benchmark only: every group at its smallest option (feasible whenever any plan is)."""

    name = "smallest-option"

    def _solve(self, cp):
        (name, _), *_ = cp.caps.items()
        return Solution(np.array([int(np.argmin(r)) for r in cp.resources[name]]), "feasible")
