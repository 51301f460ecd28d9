"""The command line in scripts: a clean stdout, JSON listings, -v/-q logging, early validation, progress bars."""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from mpq import console
from mpq.cli import main
from mpq.schema import save_document
from tests.helpers.problems import seeded_problem

FAST = ["--estimator", "weight-error", "--no-eval", "--bits", "2,4,8"]


@pytest.fixture(autouse=True)
def _default_verbosity():
    yield
    console.configure(0)


def test_plan_to_stdout_writes_only_the_document_and_the_table_to_stderr(capsys):
    assert main(["plan", "--budget", "avg_bits=4", "-o", "-", *FAST]) == 0
    out, err = capsys.readouterr()
    plan = json.loads(out)  # nothing but the document
    assert plan["schema"] == "mpq.plan/v1" and plan["totals"]["avg_bits"] <= 4
    assert "layer" in err and "features.0" in err and "total" in err


def test_solve_without_output_keeps_stdout_for_the_plan(tmp_path, capsys):
    path = tmp_path / "problem.json"
    save_document(seeded_problem(3), path)
    assert main(["solve", str(path), "--solver", "dp"]) == 0
    assert json.loads(capsys.readouterr().out)["schema"] == "mpq.plan/v1"


@pytest.mark.parametrize("command,key,name", [("estimators", "estimators", "hessian-trace"), ("solvers", "solvers", "dp")])
def test_listing_commands_print_json(command, key, name, capsys):
    assert main([command, "--json"]) == 0
    entries = json.loads(capsys.readouterr().out)[key]
    by_name = {e["name"]: e for e in entries}
    assert name in by_name and by_name[name]["description"]
    assert all({"name", "description", "settings"} <= set(e) for e in entries)


def test_layers_lists_json(capsys):
    assert main(["layers", "--json"]) == 0
    assert [l["name"] for l in json.loads(capsys.readouterr().out)["layers"]][0] == "features.0"


def test_verbose_logs_the_pipeline_under_the_mpq_logger_and_quiet_hides_info(capsys):
    assert main(["-v", "plan", "--budget", "avg_bits=4", "-o", "-", *FAST]) == 0
    err = capsys.readouterr().err
    assert "DEBUG mpq: graph: 5 quantizable layers" in err and "DEBUG mpq: solver" in err
    assert main(["plan", "-q", "--budget", "avg_bits=4", "-o", "-", *FAST]) == 0
    assert "DEBUG" not in capsys.readouterr().err
    assert logging.getLogger("mpq").level == logging.WARNING


def test_an_unknown_solver_is_reported_before_any_sensitivity_is_estimated(monkeypatch, capsys):
    import mpq.pipeline

    def never(*a, **k):
        raise AssertionError("sensitivities were estimated before the solver name was checked")

    monkeypatch.setattr(mpq.pipeline, "sensitivities", never)
    monkeypatch.setattr(mpq.pipeline, "discover", never)
    assert main(["plan", "--budget", "avg_bits=4", "--solver", "nope"]) == 2
    assert "unknown solver 'nope'" in capsys.readouterr().err


def test_progress_bars_keep_their_timing_and_switch_off_when_quiet_or_not_a_terminal():
    b = console.bar(total=3, desc="x")
    assert b.leave is True
    assert b.disable  # stderr under pytest is not a terminal
    b.close()
    console.configure(-1)
    assert console.bar(total=3, quiet=False).disable


def test_search_bar_advances_with_the_fraction_done():
    bar = console.SearchBar(10, quiet=True)
    bar(0.35)
    bar(0.7)
    assert bar.done == 7
    bar.close()
