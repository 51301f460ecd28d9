"""Solvers: every one takes an ``mpq.problem/v1`` and returns an ``mpq.plan/v1``."""
from .base import SOLVERS, Solution, Solver, available_solvers, get_solver, register_solver, solve
from .frontier import frontier

__all__ = ["SOLVERS", "Solution", "Solver", "available_solvers", "frontier", "get_solver", "register_solver", "solve"]
