"""The greedy baseline: meets every budget, reports the LP bound."""
from __future__ import annotations

import numpy as np
from tests.helpers.problems import brute_force, random_problem

from mpq.plan import violations
from mpq.solvers import get_solver


def test_greedy_down_and_up_meet_the_budget_and_report_a_valid_bound():
    problem = random_problem(np.random.default_rng(11), n_layers=8, n_options=6, slack=0.4)
    best = brute_force(problem)[0]
    for direction in ("down", "up"):
        plan = get_solver("greedy", direction=direction).solve(problem)
        assert not violations(plan.totals, problem.constraints)
        assert plan.solver.status == "feasible" and plan.solver.bound <= best + 1e-12 <= plan.totals.distortion + 2e-12
