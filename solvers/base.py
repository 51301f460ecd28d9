"""The solver interface and its registry.

A solver takes an ``mpq.problem/v1`` and returns an ``mpq.plan/v1``: one option per layer, within
every constraint, with status, bound and gap. Solvers are pure numpy/PuLP and never import torch.
To add one, write a module in this package::

    @register_solver
    class MySolver(Solver):
        name = "mine"

        def _solve(self, cp):            # cp: a Compiled problem (numpy arrays)
            choice = ...                 # option index per group
            return Solution(choice, status="feasible", bound=None)
"""
from __future__ import annotations

import importlib
import pkgutil
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Optional

import numpy as np

from mpq.errors import UnknownName
from mpq.schema import Plan, Problem, Provenance, SolverInfo

from .compiled import Compiled, compile_problem

SOLVERS: dict[str, type["Solver"]] = {}


@dataclass
class Solution:
    choice: np.ndarray  # option index per decision group
    status: str  # "optimal" (proven) or "feasible"
    bound: Optional[float] = None  # proven lower bound on the objective, when known


class Solver(ABC):
    name: ClassVar[str]
    #: True when the solver proves optimality for the problems it accepts.
    exact: ClassVar[bool] = False

    def __init__(self, *, time_limit_s: Optional[float] = None, **settings: Any):
        self.time_limit_s = time_limit_s
        self.settings = settings

    def solve(self, problem: Problem, provenance: Optional[Provenance] = None) -> Plan:
        """Compile, check feasibility (naming the smallest feasible budget), optimize, verify, build the plan."""
        t0 = time.perf_counter()
        cp = compile_problem(problem)
        cp.check_feasible()
        sol = self._solve(cp)
        objective = cp.objective(sol.choice)
        bound = sol.bound if sol.bound is not None else (objective if sol.status == "optimal" else None)
        gap = None
        if bound is not None:
            gap = max(0.0, (objective - bound) / max(abs(objective), 1e-300)) if objective else 0.0
        info = SolverInfo(
            name=self.name, status=sol.status, objective=objective, bound=bound, gap=gap,
            seconds=round(time.perf_counter() - t0, 6),
        )
        return cp.plan(sol.choice, info, provenance)

    @abstractmethod
    def _solve(self, cp: Compiled) -> Solution:
        """Choose one option index per group of ``cp`` within ``cp.caps``."""


def register_solver(cls: type[Solver]) -> type[Solver]:
    SOLVERS[cls.name] = cls
    return cls


def _import_all() -> None:
    import mpq.solvers as pkg

    for info in pkgutil.iter_modules(pkg.__path__):
        if not info.name.startswith("_") and info.name not in ("base", "compiled"):
            importlib.import_module(f"mpq.solvers.{info.name}")


def available_solvers() -> list[str]:
    _import_all()
    return sorted([*SOLVERS, "auto"])


def get_solver(name: str, **settings: Any) -> Solver:
    """A solver by registered name; ``auto`` picks an exact one for the problem at solve time."""
    _import_all()
    if name == "auto":
        return AutoSolver(**settings)
    try:
        cls = SOLVERS[name]
    except KeyError:
        raise UnknownName("solver", name, [*SOLVERS, "auto"]) from None
    return cls(**settings)


def solve(problem: Problem, solver: str = "auto", **settings: Any) -> Plan:
    return get_solver(solver, **settings).solve(problem)


class AutoSolver(Solver):
    """Exact DP for one size-like budget without pairwise terms, the ILP otherwise."""

    name = "auto"
    exact = True

    def choose(self, problem: Problem) -> str:
        from .dp import dp_applicable

        return "dp" if dp_applicable(problem) else "ilp"

    def solve(self, problem: Problem, provenance: Optional[Provenance] = None) -> Plan:
        return get_solver(self.choose(problem), time_limit_s=self.time_limit_s, **self.settings).solve(problem, provenance)

    def _solve(self, cp: Compiled) -> Solution:  # pragma: no cover - solve() dispatches before this
        raise NotImplementedError
