"""The exact frontier is monotone and complete; pareto, greedy and bisection behave as documented."""
from __future__ import annotations

import json

import numpy as np
import pytest
from tests.helpers.problems import brute_force, random_problem
from hypothesis import given, settings
from hypothesis import strategies as st

from mpq.errors import PlanInfeasible, SolverNotApplicable
from mpq.plan import violations
from mpq.schema import Constraints
from mpq.solvers import get_solver
from mpq.solvers.frontier import frontier


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(2, 5), ties=st.booleans(), axis=st.sampled_from(["bytes", "bits"]))
def test_frontier_is_monotone_and_every_point_is_optimal_at_its_size(seed, n, ties, axis):
    problem = random_problem(np.random.default_rng(seed), n_layers=n, ties=ties)
    front = frontier(problem, axis)
    sizes = [p.bytes if axis == "bytes" else p.avg_bits for p in front.points]
    dist = [p.distortion for p in front.points]
    assert all(b > a for a, b in zip(sizes, sizes[1:]))  # more size ...
    assert all(b < a for a, b in zip(dist, dist[1:]))  # ... strictly less distortion
    key = "max_bytes" if axis == "bytes" else "max_avg_bits"
    for p in front.points[:: max(1, len(front.points) // 4)]:
        cap = p.bytes if axis == "bytes" else p.avg_bits
        best = brute_force(problem.model_copy(update={"constraints": Constraints(**{key: cap})}))
        assert p.distortion == pytest.approx(best[0], rel=1e-9, abs=1e-12)
        plan = front.plan(problem, front.points.index(p))
        assert plan.totals.distortion == pytest.approx(p.distortion) and plan.totals.bytes == p.bytes


def test_frontier_refuses_pair_terms():
    with pytest.raises(SolverNotApplicable, match="pair terms"):
        frontier(random_problem(np.random.default_rng(1), 4, pairs=1))


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


def test_greedy_down_and_up_meet_the_budget_and_report_a_valid_bound():
    problem = random_problem(np.random.default_rng(11), n_layers=8, n_options=6, slack=0.4)
    best = brute_force(problem)[0]
    for direction in ("down", "up"):
        plan = get_solver("greedy", direction=direction).solve(problem)
        assert not violations(plan.totals, problem.constraints)
        assert plan.solver.status == "feasible" and plan.solver.bound <= best + 1e-12 <= plan.totals.distortion + 2e-12


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


def test_frontier_cli_writes_json_and_a_png_with_uniform_points(tmp_path):
    from mpq.cli import main
    from mpq.schema import save_document

    problem = random_problem(np.random.default_rng(2), n_layers=5, n_options=6, ragged=False)
    save_document(problem, tmp_path / "p.json")
    assert main(["frontier", str(tmp_path / "p.json"), "-o", str(tmp_path / "f.json"), "--plot", str(tmp_path / "f.png")]) == 0
    doc = json.loads((tmp_path / "f.json").read_text())
    assert doc["schema"] == "mpq.frontier/v1" and len(doc["points"]) >= 5 and len(doc["uniform"]) == 6
    assert set(doc["points"][0]["choice"]) == {l.name for l in problem.layers}
    assert (tmp_path / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
