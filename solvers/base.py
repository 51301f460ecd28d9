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

from mpq.errors import SolverSettingsError, UnknownName
from mpq.schema import Plan, Problem, Provenance, SolverInfo
from mpq.settings import check_settings

from .compiled import Compiled, compile_any

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
        """Compile, check feasibility (naming the smallest feasible budget), optimize, verify, build the plan.

        ``problem`` is an ``mpq.problem/v1`` or its columnar form (:class:`mpq.columnar.ProblemColumns`).
        """
        cp, choice, info = self.run(problem)
        return cp.plan(choice, info, provenance)

    def solve_columns(self, problem, provenance: Optional[Provenance] = None):
        """The plan as columns (:class:`mpq.plan_columns.PlanColumns`): from a columnar problem without
        ties or pairs, no Python object is built per group."""
        cp, choice, info = self.run(problem)
        return cp.plan_columns(choice, info, provenance)

    def run(self, problem) -> tuple[Compiled, np.ndarray, SolverInfo]:
        """Compile, check feasibility, optimize: the compiled problem, the choice and its solver record."""
        t0 = time.perf_counter()
        cp = compile_any(problem)
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
        return cp, sol.choice, info

    @abstractmethod
    def _solve(self, cp: Compiled) -> Solution:
        """Choose one option index per group of ``cp`` within ``cp.caps``."""


def register_solver(cls: type[Solver]) -> type[Solver]:
    SOLVERS[cls.name] = cls
    return cls


_imported = False


def _import_all() -> None:
    global _imported
    if _imported:  # once per process: the service calls this on every request
        return
    import mpq.solvers as pkg

    for info in pkgutil.iter_modules(pkg.__path__):
        if not info.name.startswith("_") and info.name not in ("base", "compiled"):
            importlib.import_module(f"mpq.solvers.{info.name}")
    _imported = True


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
    check_settings(f"solver {name!r}", cls, settings, SolverSettingsError)
    return cls(**settings)



def solve(problem: Problem, solver: str = "auto", **settings: Any) -> Plan:
    """Solve an ``mpq.problem/v1`` (or its columnar form) with a registered solver; ``auto`` picks one."""
    return get_solver(solver, **settings).solve(problem)


class AutoSolver(Solver):
    """The fastest method that is exact for the problem at hand.

    - several constraints or pairwise terms: ``ilp`` (HiGHS, proven optimal);
    - one size-like budget, up to 12 groups: ``dp`` (its frontier stays tiny);
    - one budget, more groups: ``lagrangian``, whose core DP proves the optimum (measured on both
      benchmark families up to 1,000,000 groups); up to 100,000 groups a core too large for the DP
      goes to HiGHS (``prove=True``), beyond that the status says ``feasible`` with a certified gap.
    """

    name = "auto"
    exact = True
    PROVE_UP_TO = 100_000

    def choose(self, problem) -> tuple[str, dict]:
        from mpq.columnar import ProblemColumns

        n_layers = problem.n_layers if isinstance(problem, ProblemColumns) else len(problem.layers)
        n_groups = n_layers - sum(len(t) - 1 for t in problem.ties)
        active = problem.constraints.active()
        if problem.pairs or len(active) > 1:
            return "ilp", {"backend": "highs"}
        if n_groups <= 12 and "max_latency_ms" not in active:
            return "dp", {}
        return "lagrangian", {"prove": n_groups <= self.PROVE_UP_TO}

    def run(self, problem) -> tuple[Compiled, np.ndarray, SolverInfo]:
        name, extra = self.choose(problem)
        settings = {**extra, **self.settings}
        cp, choice, info = get_solver(name, time_limit_s=self.time_limit_s, **settings).run(problem)
        info.name = f"auto:{name}"
        return cp, choice, info

    def _solve(self, cp: Compiled) -> Solution:  # pragma: no cover - solve() dispatches before this
        raise NotImplementedError
