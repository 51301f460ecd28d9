"""The evolutionary solver: NSGA-II seeded with exact solutions, reporting only non-dominated feasible plans."""
from __future__ import annotations

import itertools
import subprocess
import sys

import pytest

from mpq.errors import SolverSettingsError
from mpq.plan import violations
from mpq.solvers import get_solver
from mpq.solvers.compiled import compile_problem
from mpq.solvers.evolutionary import SearchSpace, hypervolume, non_dominated

from tests.helpers.problems import brute_force, seeded_problem as random_problem


def dominated(a, b) -> bool:
    """True when plan b dominates plan a."""
    return (b.solver.objective <= a.solver.objective and b.totals.bytes <= a.totals.bytes
            and (b.solver.objective < a.solver.objective or b.totals.bytes < a.totals.bytes))


@pytest.mark.parametrize("seed, kwargs", [
    (1, {}),
    (2, {"constraints": {"max_avg_bits": 3.2, "max_bitops": 380_000}, "ties": [("layer2", "layer3")], "pairs": True}),
])
def test_evolutionary_returns_only_non_dominated_feasible_plans(seed, kwargs):
    problem = random_problem(seed, **kwargs)
    result = get_solver("evolutionary", trials=60, seed=seed).search(problem)
    assert result.trials["COMPLETE"] == 60
    assert len(result.plans) >= 2
    cp = compile_problem(problem)
    space = SearchSpace(cp)
    for plan in result.plans:
        assert violations(plan.totals, problem.constraints) == []
        choice = space.choice({l.name: l.option for l in plan.layers})
        assert cp.fits(choice)
        assert plan.solver.status == "feasible"
        assert plan.solver.objective == pytest.approx(cp.objective(choice))
    for a, b in itertools.permutations(result.plans, 2):
        assert not dominated(a, b), (a.totals, b.totals)
    assert [p.totals.bytes for p in result.plans] == sorted(p.totals.bytes for p in result.plans)
    assert result.best is result.plans[-1]


def test_evolutionary_never_reports_an_infeasible_candidate_even_when_most_are():
    problem = random_problem(3, n=6, constraints={"max_avg_bits": 2.3})  # a tight budget: most samples break it
    result = get_solver("evolutionary", trials=40, seed=0).search(problem)
    for plan in result.plans:
        assert violations(plan.totals, problem.constraints) == []


def test_seeding_with_the_dp_frontier_finds_the_exact_optimum_and_certifies_it():
    problem = random_problem(4)
    plan = get_solver("evolutionary", trials=20, seed=0).solve(problem)
    assert plan.solver.name == "evolutionary" and plan.solver.status == "feasible"
    assert plan.solver.objective == pytest.approx(brute_force(problem)[0])
    assert plan.solver.bound == pytest.approx(plan.solver.objective)
    assert plan.solver.gap == pytest.approx(0.0, abs=1e-12)


def test_the_solver_follows_the_template_on_json_and_columnar_problems():
    from mpq.columnar import ProblemColumns

    problem = random_problem(8)
    plan = get_solver("evolutionary", trials=12, seed=0).solve(problem)
    columns = get_solver("evolutionary", trials=12, seed=0).solve(ProblemColumns.from_problem(problem))
    assert [l.option for l in columns.layers] == [l.option for l in plan.layers]
    assert columns.solver.objective == pytest.approx(plan.solver.objective) and columns.solver.bound == plan.solver.bound


def test_measured_objective_is_called_only_for_feasible_plans_and_drives_the_result():
    problem = random_problem(5, n=4, constraints={"max_avg_bits": 3.0})
    seen = []

    def evaluate_plan(plan):
        assert violations(plan.totals, problem.constraints) == []
        seen.append(plan)
        return 100.0 - plan.totals.avg_bits  # "measured": more bits is better, whatever the additive model says

    result = get_solver("evolutionary", trials=30, seed=0, objective="measured", evaluate_plan=evaluate_plan).search(problem)
    assert seen
    assert result.bound is None and result.best.solver.gap is None
    assert result.best.solver.objective == pytest.approx(100.0 - result.best.totals.avg_bits)
    assert result.best.solver.objective == min(100.0 - p.totals.avg_bits for p in seen)
    plan = get_solver("evolutionary", trials=30, seed=0, objective="measured", evaluate_plan=evaluate_plan).solve(problem)
    assert plan.solver.objective == pytest.approx(100.0 - plan.totals.avg_bits) and plan.solver.bound is None


def test_progress_reports_fractions_and_should_stop_ends_the_search_early():
    problem = random_problem(6)
    calls = []
    stop_after = 7
    solver = get_solver("evolutionary", trials=50, seed=0,
                        progress=lambda fraction, best: calls.append((fraction, best)),
                        should_stop=lambda: len(calls) >= stop_after)
    result = solver.search(problem)
    assert result.trials["COMPLETE"] == stop_after
    fractions = [f for f, _ in calls]
    assert fractions == sorted(fractions) and 0 < fractions[0] and fractions[-1] == pytest.approx(stop_after / 50)
    assert all(b is None or violations(b.totals, problem.constraints) == [] for _, b in calls)


@pytest.mark.parametrize("settings, message", [
    ({"objective": "measured"}, "needs evaluate_plan"),
    ({"objective": "exact"}, "setting objective='exact': expected 'additive' or 'measured'"),
    ({"trials": 0}, "setting trials=0: expected a value >= 1"),
    ({"population": 1}, "setting population=1: expected a value >= 2"),
    ({"storage": "sqlite:///x.db"}, "unknown setting 'storage'"),  # studies are mpq.search's (tests/search)
    ({"generations": 3}, "unknown setting 'generations'"),
])
def test_bad_settings_name_the_setting(settings, message):
    with pytest.raises(SolverSettingsError, match=message.replace("[", r"\[").replace("]", r"\]")):
        get_solver("evolutionary", **settings)


def test_non_dominated_and_hypervolume_on_known_points():
    points = [(3.0, 10, 0), (2.0, 20, 1), (2.5, 20, 2), (1.0, 40, 3), (1.0, 40, 4), (5.0, 5, 5), (3.0, 12, 6)]
    assert non_dominated(points) == [5, 0, 1, 3]
    assert hypervolume([(1.0, 1.0)], (2.0, 2.0)) == pytest.approx(1.0)
    assert hypervolume([(1.0, 3.0), (2.0, 1.0)], (4.0, 4.0)) == pytest.approx(3 * 1 + 2 * 2)
    assert hypervolume([(5.0, 1.0)], (4.0, 4.0)) == 0.0


def test_the_evolutionary_solver_never_imports_torch():
    code = (
        "import sys, json\n"
        "from mpq.schema import Problem\n"
        "from mpq.solvers import get_solver\n"
        "p = Problem.model_validate(json.loads(sys.argv[1]))\n"
        "get_solver('evolutionary', trials=5).solve(p)\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    doc = random_problem(7, n=3).model_dump_json(by_alias=True)
    subprocess.run([sys.executable, "-c", code, doc], check=True, timeout=60)
