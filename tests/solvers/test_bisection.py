"""The bisection baseline: lowers the least sensitive layers until a measured drop target."""
from __future__ import annotations

import numpy as np
import pytest
from tests.helpers.problems import random_problem

from mpq.errors import SolverNotApplicable
from mpq.plan import violations
from mpq.schema import Constraints
from mpq.solvers import get_solver


def test_bisection_lowers_the_least_sensitive_layers_until_the_drop_target():
    problem = random_problem(np.random.default_rng(4), n_layers=6, n_options=6, ragged=False)
    problem = problem.model_copy(update={"constraints": Constraints(max_bytes=1e12)})
    sens = sorted((l.option("int4").distortion - l.option("fp16").distortion, l.name) for l in problem.layers)
    target = sum(d for d, _ in sens[:3]) * (1 + 1e-9)  # exactly the three least sensitive fit
    calls = []

    def score(plan):  # a stand-in for accuracy: minus the predicted distortion
        calls.append(plan)
        return -plan.totals.distortion

    plan = get_solver("bisection", evaluate_plan=score, max_drop=target, low="int4", high="fp16").solve(problem)
    assert {l.name for l in plan.layers if l.option == "int4"} == {n for _, n in sens[:3]}
    assert {l.option for l in plan.layers} == {"int4", "fp16"}
    assert len(calls) <= 1 + 1 + int(np.ceil(np.log2(6)))  # baseline, all-low, then bisection steps
    with pytest.raises(SolverNotApplicable, match="has no option 'int5'"):
        get_solver("bisection", evaluate_plan=score, max_drop=target, low="int5").solve(problem)


def test_bisection_without_a_target_meets_the_budget_and_needs_an_evaluator_with_one():
    problem = random_problem(np.random.default_rng(5), n_layers=5, slack=0.5)
    plan = get_solver("bisection").solve(problem)
    assert not violations(plan.totals, problem.constraints)
    with pytest.raises(SolverNotApplicable, match="evaluate_plan"):
        get_solver("bisection", max_drop=0.01)
