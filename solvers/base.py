"""The solver interface and its registry.

A solver takes an ``mpq.problem/v1`` and returns an ``mpq.plan/v1``: one option per layer, within
every constraint, with status, bound and gap. Solvers are pure numpy/PuLP and never import torch.
To add one, write a module in this package (or publish the class in the ``mpq.solvers`` entry
point group of your own distribution)::

    @register_solver
    class MySolver(Solver):
        name = "mine"

        class Settings(Solver.Settings):  # declared settings: type, default, range
            passes: Count = 3

        def _solve(self, cp):            # cp: a Compiled problem (numpy arrays)
            choice = ...                 # option index per group; self.passes is the checked setting
            return Solution(choice, status="feasible", bound=None)
"""
from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Optional

import numpy as np

from pydantic import ConfigDict, Field

from mpq import registry
from mpq.errors import SolverSettingsError, UnknownName
from mpq.schema import Plan, Problem, Provenance, SolverInfo
from mpq.settings import Settings, TimeLimit, check_settings, describe

from .compiled import Compiled, compile_any

SOLVERS: dict[str, type["Solver"]] = {}


@dataclass
class Solution:
    choice: np.ndarray  # option index per decision group
    status: str  # what the solver claims: "optimal" or "feasible"; the plan's status is computed (see solver_record)
    bound: Optional[float] = None  # proven lower bound on the objective, when known; "optimal" needs one
    objective: Optional[float] = None  # the value minimized, when not the problem's additive distortion (a measured one)


#: a plan is called "optimal" only when its proven relative gap is at most this
OPTIMAL_GAP = 1e-6


def relative_gap(objective: float, bound: Optional[float]) -> Optional[float]:
    """``(objective - bound) / |objective|`` (0 when both are 0), or None without a bound."""
    if bound is None or not np.isfinite(bound):
        return None
    if objective == 0:
        return 0.0 if bound >= 0 else float("inf")
    return max(0.0, (objective - bound) / abs(objective))


def solver_record(name: str, sol: Solution, objective: float, seconds: float) -> SolverInfo:
    """The plan's solver record, computed from the returned choice's objective and the proven bound.

    A solver's claim is never taken on trust: without a bound the status is ``feasible`` with no
    gap, and ``optimal`` needs a proven gap of at most :data:`OPTIMAL_GAP` (an ILP stopped at
    ``gap_rel=0.5`` is ``feasible`` with its gap, not ``optimal`` with gap 0). A bound above the
    objective (numerical noise of an exact method) is clipped to it.
    """
    bound = None if sol.bound is None or not np.isfinite(sol.bound) else min(float(sol.bound), objective)
    gap = relative_gap(objective, bound)
    status = "optimal" if sol.status == "optimal" and gap is not None and gap <= OPTIMAL_GAP else "feasible"
    return SolverInfo(name=name, status=status, objective=objective, bound=bound, gap=gap, seconds=round(seconds, 6))


class SolverSettings(Settings):
    """Settings every solver takes."""

    time_limit_s: TimeLimit = Field(None, description="wall-clock limit in seconds (none: no limit)")


class Solver(ABC):
    """Base class: subclasses set ``name``, declare ``Settings`` and implement :meth:`_solve`.

    Constructor keywords are the settings, checked once against ``Settings`` (an unknown name or an
    out-of-range value is a :class:`SolverSettingsError` naming it); each becomes an attribute.
    """

    name: ClassVar[str]
    #: True when the solver proves optimality for the problems it accepts.
    exact: ClassVar[bool] = False
    Settings: ClassVar[type[SolverSettings]] = SolverSettings

    def __init__(self, **settings: Any):
        self.settings = check_settings(f"solver {self.name!r}", self.Settings, settings, SolverSettingsError)
        self.__dict__.update(dict(self.settings))

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
        objective = cp.objective(sol.choice) if sol.objective is None else sol.objective
        info = solver_record(self.name, sol, objective, time.perf_counter() - t0)
        return cp, sol.choice, info

    @abstractmethod
    def _solve(self, cp: Compiled) -> Solution:
        """Choose one option index per group of ``cp`` within ``cp.caps``."""


#: Register a solver class under its ``name`` (once).
register_solver = registry.registrar(SOLVERS, "solver")


def _import_all() -> None:
    """Built-in solvers and ``mpq.solvers`` entry-point plugins, loaded once per process."""
    registry.load("mpq.solvers", "mpq.solvers", SOLVERS, "solver")


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



def solver_listing() -> list[dict[str, Any]]:
    """Every registered solver (and ``auto``) as ``mpq solvers`` and ``GET /v1/solvers`` show it."""
    _import_all()
    out = []
    for name in available_solvers():
        cls = AutoSolver if name == "auto" else SOLVERS[name]
        doc = (cls.__doc__ or "").strip().splitlines()
        out.append({"name": name, "exact": bool(cls.exact), "description": doc[0] if doc else "",
                    "settings": describe(cls.Settings)})
    return out


def solve(problem: Problem, solver: str = "auto", **settings: Any) -> Plan:
    """Solve an ``mpq.problem/v1`` (or its columnar form) with a registered solver; ``auto`` picks one."""
    return get_solver(solver, **settings).solve(problem)


class AutoSolver(Solver):
    """Pick the fastest exact solver for the problem.

    - several constraints or pairwise terms: ``ilp`` (HiGHS, proven optimal);
    - one size-like budget, up to 12 groups: ``dp`` (its frontier stays tiny);
    - one budget, more groups: ``lagrangian``, whose core DP proves the optimum (measured on both
      benchmark families up to 1,000,000 groups); up to 100,000 groups a core too large for the DP
      goes to HiGHS (``prove=True``), beyond that the status says ``feasible`` with a certified gap.
    """

    name = "auto"
    exact = True
    PROVE_UP_TO = 100_000

    class Settings(SolverSettings):
        """``time_limit_s``; any other setting goes to the solver auto picks, which checks it."""

        model_config = ConfigDict(extra="allow")

    def choose(self, problem) -> tuple[str, dict]:
        from mpq.columnar import ProblemColumns

        if isinstance(problem, Compiled):
            problem = problem.problem if problem.problem is not None else problem.columns
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
        settings = {**extra, **(self.settings.model_extra or {})}
        cp, choice, info = get_solver(name, time_limit_s=self.time_limit_s, **settings).run(problem)
        info.name = f"auto:{name}"
        return cp, choice, info

    def _solve(self, cp: Compiled) -> Solution:  # pragma: no cover - solve() dispatches before this
        raise NotImplementedError
