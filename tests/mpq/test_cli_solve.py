"""``mpq solve``: every solver from the command line, settings (--param and the solver's own options),
columnar problems, named errors and exit codes."""
from __future__ import annotations

import json

import pytest

from mpq.cli import main
from mpq.columnar import ProblemColumns
from mpq.errors import SolverSettingsError
from mpq.plan_columns import load_plan
from mpq.schema import Plan, Problem, load_document, save_document
from mpq.solvers import get_solver

from tests.helpers.problems import HAND, seeded_problem

SOLVERS = ["auto", "ilp", "dp", "lagrangian", "pareto", "greedy", "bisection"]


@pytest.fixture
def hand_file(tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps(HAND))
    return path


@pytest.mark.parametrize("solver", SOLVERS)
def test_mpq_solve_works_for_every_solver_on_a_hand_written_problem(hand_file, tmp_path, solver, capsys):
    assert main(["solve", str(hand_file), "--solver", solver, "-o", str(tmp_path / "plan.json")]) == 0
    plan = load_document(tmp_path / "plan.json", Plan)
    assert plan.totals.bytes <= 6000 and plan.solver.name.endswith(solver if solver != "auto" else "dp")
    if solver not in ("greedy", "bisection"):
        assert plan.totals.distortion == pytest.approx(0.00511) and plan.solver.status == "optimal"


def test_mpq_solve_names_the_smallest_budget_when_infeasible(hand_file, capsys):
    assert main(["solve", str(hand_file), "--budget", "bytes=1000"]) == 3  # EXIT_INFEASIBLE
    assert "max_bytes=2656" in capsys.readouterr().err


def test_mpq_solve_reads_and_writes_columnar_problems(hand_file, tmp_path, capsys):
    assert main(["solve", str(hand_file), "--problem-out", str(tmp_path / "p.npz"), "-o", str(tmp_path / "a.json")]) == 0
    assert main(["solve", str(tmp_path / "p.npz"), "--solver", "lagrangian", "-o", str(tmp_path / "b.json")]) == 0
    a, b = load_document(tmp_path / "a.json", Plan), load_document(tmp_path / "b.json", Plan)
    assert [l.option for l in a.layers] == [l.option for l in b.layers]
    assert a.totals.bytes == b.totals.bytes and a.totals.distortion == pytest.approx(b.totals.distortion)


def test_solver_settings_reach_the_solver_and_typos_are_refused(tmp_path, capsys):
    path = tmp_path / "p.json"
    save_document(seeded_problem(11), path)
    assert main(["solve", str(path), "--solver", "ilp", "--param", "backend=highs", "-o", str(tmp_path / "plan.json")]) == 0
    assert json.loads((tmp_path / "plan.json").read_text())["solver"]["name"] == "ilp"
    assert main(["solve", str(path), "--solver", "ilp", "--param", "backend=gurobi"]) == 2
    assert "solver 'ilp': setting backend='gurobi': expected 'cbc' or 'highs'" in capsys.readouterr().err
    with pytest.raises(SolverSettingsError, match=r"solver 'dp': unknown setting 'beam'; known: .*time_limit_s"):
        get_solver("dp", beam=3)


def test_evolutionary_search_shows_a_bar_not_optuna_log_lines(tmp_path, capsys):
    path = tmp_path / "problem.json"
    save_document(seeded_problem(4), path)
    assert main(["solve", str(path), "--solver", "evolutionary", "--trials", "12", "-o", str(tmp_path / "plan.json")]) == 0
    err = capsys.readouterr().err
    assert "Trial 0 finished" not in err and "A new study created" not in err


def test_evolutionary_solves_a_columnar_problem_with_params_and_its_own_options(tmp_path, capsys):
    problem = seeded_problem(10)
    path = ProblemColumns.from_problem(problem).save(tmp_path / "problem.npz")
    out = tmp_path / "plan.npz"
    assert main(["solve", str(path), "--solver", "evolutionary", "--param", "trials=12", "--param", "population=4",
                 "--seed", "1", "--quiet", "-o", str(out)]) == 0, capsys.readouterr().err
    assert "non-dominated feasible plans after 12 complete trials" in capsys.readouterr().err
    plan = load_plan(out)
    assert plan.solver.name == "evolutionary" and plan.totals.avg_bits <= problem.constraints.max_avg_bits


@pytest.mark.parametrize("argv, message", [
    (["--storage", "sqlite:///s.db"], "--storage and --study go together"),
    (["--study", "s"], "--storage and --study go together"),
    (["--storage", "sqlite:///s.db", "--study", "s", "--server", "http://127.0.0.1:1"], "--storage runs the search here"),
    (["--param", "storage=sqlite:///s.db"], "solver 'evolutionary': unknown setting 'storage'"),
    (["--trials", "0"], "--trials must be a positive integer"),
])
def test_evolutionary_option_errors_are_named(tmp_path, capsys, argv, message):
    path = tmp_path / "problem.json"
    save_document(seeded_problem(5), path)
    assert main(["solve", str(path), "--solver", "evolutionary", "--quiet", *argv]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "s.db").exists()


def test_search_options_go_with_the_evolutionary_solver_only(tmp_path, capsys):
    path = tmp_path / "problem.json"
    save_document(Problem.model_validate(HAND), path)
    assert main(["solve", str(path), "--solver", "dp", "--trials", "5"]) == 2
    assert "--trials goes with --solver evolutionary, not --solver dp" in capsys.readouterr().err


@pytest.mark.parametrize("env, command, expected", [
    ({}, "solve", "1"),  # no torch, no BLAS call: numpy's OpenBLAS pool would only spin
    ({"OPENBLAS_NUM_THREADS": "3"}, "solve", "3"),  # a user's setting stands
    ({}, "layers", None),  # commands that run models keep torch's and numpy's defaults
])
def test_mpq_solve_runs_numpy_without_a_blas_thread_pool(hand_file, tmp_path, env, command, expected):
    import os
    import subprocess
    import sys

    code = ("import os, sys\nfrom mpq.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "print('OPENBLAS', os.environ.get('OPENBLAS_NUM_THREADS'))")
    args = ["solve", str(hand_file), "-o", str(tmp_path / "plan.json")] if command == "solve" else ["layers", "--help"]
    clean = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    out = subprocess.run([sys.executable, "-c", code, *args], env={**clean, **env}, capture_output=True, text=True)
    last = out.stdout.strip().splitlines()[-1]
    assert last == f"OPENBLAS {expected}", out.stderr
