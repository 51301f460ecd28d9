"""The pareto solver: a frontier point by rule (budget, knee, max_distortion)."""
from __future__ import annotations

import numpy as np
import pytest
from tests.helpers.problems import random_problem

from mpq.errors import PlanInfeasible
from mpq.solvers import get_solver
from mpq.solvers.frontier import frontier


def test_pareto_rules_budget_knee_and_max_distortion():
    problem = random_problem(np.random.default_rng(7), n_layers=6, slack=0.6)
    best = get_solver("dp").solve(problem)
    assert get_solver("pareto").solve(problem).totals.distortion == pytest.approx(best.totals.distortion)
    within = [p for p in frontier(problem).points if p.within_budget]
    knee = get_solver("pareto", rule="knee").solve(problem)
    assert min(abs(knee.totals.distortion - p.distortion) for p in within) <= 1e-12
    assert knee.solver.status == "feasible" and knee.solver.bound == pytest.approx(best.totals.distortion)
    limit = within[len(within) // 2].distortion * 1.0000001
    small = get_solver("pareto", rule="max_distortion", max_distortion=limit).solve(problem)
    smallest = min((p for p in within if p.distortion <= limit), key=lambda p: p.bytes)
    assert small.totals.bytes == smallest.bytes and small.totals.distortion <= limit
    beyond = [p for p in frontier(problem).points if not p.within_budget]
    with pytest.raises(PlanInfeasible, match="smallest plan meeting it needs max_bytes=") as e:
        get_solver("pareto", rule="max_distortion", max_distortion=beyond[0].distortion).solve(problem)
    assert e.value.minimum == {"max_bytes": beyond[0].bytes}
    with pytest.raises(ValueError, match="max_distortion"):
        get_solver("pareto", rule="max_distortion")
