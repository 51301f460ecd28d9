"""The search's commands (mpq.search.cli): mpq solve --storage/--study, mpq worker, mpq search status."""
from __future__ import annotations

import json

import pytest

from mpq.cli import main
from mpq.plan import violations
from mpq.schema import Plan, parse_document
from mpq.search import StudySearch, join_study
from mpq.search.study import problem_fingerprint
from mpq.solvers import get_solver

from tests.helpers.problems import seeded_problem as random_problem


def states(url: str, name: str) -> dict[str, int]:
    study, _ = join_study(url, name)
    out: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        out[t.state.name] = out.get(t.state.name, 0) + 1
    return out


def test_cli_solve_creates_and_continues_a_study_and_status_prints_design_plans(sqlite_url, tmp_path, capsys):
    url = sqlite_url
    problem = random_problem(15)
    path = tmp_path / "problem.json"
    path.write_text(problem.model_dump_json(by_alias=True))
    base = ["solve", str(path), "--solver", "evolutionary", "--storage", url, "--study", "cli", "--quiet"]
    assert main(base + ["--trials", "8", "-o", str(tmp_path / "plan.json")]) == 0
    assert main(base + ["--trials", "12", "-o", str(tmp_path / "plan.json")]) == 0
    plan = parse_document(json.loads((tmp_path / "plan.json").read_text()), Plan)
    assert plan.solver.name == "evolutionary" and violations(plan.totals, problem.constraints) == []
    capsys.readouterr()

    assert main(["search", "status", "--storage", url, "--study", "cli", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["trials"]["COMPLETE"] == 12 and status["target"] == 12
    assert status["fingerprint"] == problem_fingerprint(problem)
    plans = [parse_document(p, Plan) for p in status["plans"]]
    assert plans and all(violations(p.totals, problem.constraints) == [] for p in plans)

    assert main(["search", "status", "--storage", url, "--study", "cli"]) == 0
    out = capsys.readouterr().out
    assert "12/12 complete" in out and "non-dominated feasible plans" in out

    assert main(base + ["--population", "9"]) == 2  # other settings: refused with an error line, not a traceback
    assert "already exists with other settings" in capsys.readouterr().err


def test_cli_worker_joins_a_study_and_completes_its_trials(sqlite_url):
    url = sqlite_url
    problem = random_problem(16)
    StudySearch(get_solver("evolutionary", trials=10, should_stop=lambda: True), url, "w").search(problem)
    assert states(url, "w").get("COMPLETE", 0) == 0  # created and seeded, nothing run yet
    assert main(["worker", "--storage", url, "--study", "w", "--trials", "4", "--quiet"]) == 0
    assert states(url, "w")["COMPLETE"] == 4
    assert main(["worker", "--storage", url, "--study", "w", "--quiet"]) == 0
    assert states(url, "w")["COMPLETE"] == 10


def test_cli_solve_with_the_measured_objective_reports_measured_losses(tiny_problem, sqlite_url, tmp_path, capsys):
    _, problem = tiny_problem
    path = tmp_path / "problem.json"
    path.write_text(problem.model_dump_json(by_alias=True))
    url = sqlite_url
    assert main(["solve", str(path), "--solver", "evolutionary", "--storage", url, "--study", "m", "--trials", "10",
                 "--objective", "measured", "--model", "tinywl:workload", "--quiet", "-o", str(tmp_path / "plan.json")]) == 0
    plan = parse_document(json.loads((tmp_path / "plan.json").read_text()), Plan)
    assert plan.solver.gap is None and plan.solver.objective != pytest.approx(plan.totals.distortion)
    spec = join_study(url, "m")[1]
    assert spec.objective == "measured" and spec.model == "tinywl:workload"
