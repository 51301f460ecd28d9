"""A plan's status and gap are computed from its objective and the proven bound, never assumed."""
from __future__ import annotations

import json

import numpy as np
import pytest
from tests.helpers.problems import random_problem

from mpq.solvers import get_solver
from mpq.solvers.base import OPTIMAL_GAP, Solution, solver_record


@pytest.mark.parametrize("claim, bound, objective, status, gap", [
    ("optimal", None, 1.0, "feasible", None),  # a claim without a bound is not a proof
    ("optimal", 0.5, 1.0, "feasible", 0.5),  # a loose bound: feasible, with the gap it proves
    ("optimal", 1.0 - 1e-9, 1.0, "optimal", 1e-9),
    ("feasible", 1.0, 1.0, "feasible", 0.0),  # a heuristic keeps its label even when the bound meets it
    ("optimal", 1.2, 1.0, "optimal", 0.0),  # a bound above the objective (noise) is clipped to it
    ("optimal", 0.0, 0.0, "optimal", 0.0),
])
def test_the_record_is_computed_from_objective_and_bound(claim, bound, objective, status, gap):
    info = solver_record("x", Solution(np.zeros(1, dtype=np.int64), claim, bound), objective, 0.1)
    assert info.status == status
    assert info.gap == (None if gap is None else pytest.approx(gap, abs=1e-15))
    assert info.bound is None or info.bound <= info.objective


@pytest.mark.parametrize("backend", ["highs", "cbc"])
@pytest.mark.parametrize("gap_rel", [0.5, 1e9])
def test_a_loose_gap_rel_is_never_reported_as_optimal_with_gap_0(backend, gap_rel):
    rng = np.random.default_rng(13)
    problem = random_problem(rng, n_layers=60, n_options=6, constraints=("max_avg_bits", "max_bytes"), slack=0.3)
    exact = get_solver("ilp", backend="highs").solve(problem)
    assert exact.solver.status == "optimal" and exact.solver.gap <= OPTIMAL_GAP
    loose = get_solver("ilp", backend=backend, gap_rel=gap_rel, warm_start=False).solve(problem)
    s = loose.solver
    assert s.bound is not None and s.bound <= exact.solver.objective * (1 + 1e-9)
    true_gap = (s.objective - exact.solver.objective) / s.objective
    assert s.gap >= true_gap - 1e-9  # the stated gap covers the real one
    if s.status == "optimal":
        assert s.objective == pytest.approx(exact.solver.objective, rel=OPTIMAL_GAP) and s.gap <= OPTIMAL_GAP
    else:
        assert s.gap > OPTIMAL_GAP


def test_the_issue_repro_on_the_command_line(tmp_path, capsys):
    from mpq.cli import main

    rng = np.random.default_rng(5)
    problem = random_problem(rng, n_layers=60, n_options=6, constraints=("max_avg_bits", "max_bytes"), slack=0.3)
    path = tmp_path / "problem.json"
    path.write_text(problem.model_dump_json(by_alias=True))
    out = tmp_path / "plan.json"
    assert main(["solve", str(path), "--solver", "ilp", "--param", "backend=highs", "--param", "gap_rel=0.5",
                 "--param", "warm_start=false", "-o", str(out)]) == 0
    solver = json.loads(out.read_text())["solver"]
    exact = get_solver("ilp", backend="highs").solve(problem).solver.objective
    assert solver["status"] == "feasible" or solver["objective"] == pytest.approx(exact, rel=OPTIMAL_GAP)
    assert solver["gap"] >= (solver["objective"] - exact) / solver["objective"] - 1e-9
