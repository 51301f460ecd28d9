"""The columnar plan (mpq.plan-columns/v1): round trips, validation, and the commands that read it."""
from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path

import numpy as np
import pytest
from tests.helpers.problems import random_problem

from mpq.cli import main
from mpq.columnar import ProblemColumns
from mpq.errors import DocumentError
from mpq.plan_columns import PlanColumns, load_plan, load_plan_columns
from mpq.schema import Plan, load_document
from mpq.solvers import get_solver

_spec = importlib.util.spec_from_file_location("mckp_instances", Path(__file__).parents[2] / "benchmarks" / "mckp_instances.py")
mckp = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mckp)


def test_mpq_solve_npz_to_npz_writes_the_same_plan_as_json(tmp_path, capsys):
    cols = mckp.problem_columns(400, "layer", 3)
    cols.save(tmp_path / "p.npz")
    assert main(["solve", str(tmp_path / "p.npz"), "-o", str(tmp_path / "plan.npz")]) == 0
    out = capsys.readouterr().out
    assert "g0 " in out and "g399" in out and "(380 more layers)" in out and "400 layers by option" in out
    assert main(["solve", str(tmp_path / "p.npz"), "-o", str(tmp_path / "plan.json")]) == 0
    from_columns = load_plan(tmp_path / "plan.npz")
    from_json = load_document(tmp_path / "plan.json", Plan)
    assert from_columns.layers == from_json.layers
    assert from_columns.totals == from_json.totals and from_columns.solver.status == "optimal"
    assert load_plan_columns(tmp_path / "plan.npz").header()["schema"] == "mpq.plan-columns/v1"


def test_a_json_plan_round_trips_through_columns(tmp_path):
    problem = random_problem(np.random.default_rng(3), n_layers=12, ties=True, pairs=2, constraints=("max_bytes",))
    plan = get_solver("ilp").solve(problem)
    PlanColumns.from_plan(plan).save(tmp_path / "plan.npz")
    assert load_plan(tmp_path / "plan.npz") == plan


def test_solve_columns_builds_no_plan_layer_objects(monkeypatch):
    import mpq.schema as schema

    cols = mckp.problem_columns(300, "chgroup", 5)
    calls = []
    monkeypatch.setattr(schema.PlanLayer, "model_construct", classmethod(lambda cls, **kw: calls.append(1)))
    plan = get_solver("auto").solve_columns(cols)
    assert not calls and plan.n_layers == 300 and plan.solver.status == "optimal"
    assert plan.totals.avg_bits <= 4.0


def _saved(tmp_path, edit) -> Path:
    plan = get_solver("auto").solve_columns(mckp.problem_columns(50, "layer", 1))
    data = {"header": np.array(json.dumps(plan.header())), **plan.arrays}
    edit(data)
    np.savez(tmp_path / "bad.npz", **data)
    return tmp_path / "bad.npz"


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.update(header=np.array(json.dumps({**json.loads(str(d["header"])), "totals": {
        **json.loads(str(d["header"]))["totals"], "bytes": 1}}))), "header.totals.bytes: 1 does not match the columns"),
    (lambda d: d["row_option"].__setitem__(4, 99), "row_option: must index option_names at layer 'g4'"),
    (lambda d: d["layer_name"].__setitem__(7, "g3"), "layer name 'g3' appears twice"),
    (lambda d: d["bytes"].__setitem__(2, 1), "bytes: must be ceil(bits/8) at layer 'g2'"),
    (lambda d: d.pop("distortion"), "distortion: array required"),
    (lambda d: d.update(header=np.array(json.dumps({"schema": "mpq.plan/v1"}))), "that is the JSON plan's schema"),
])
def test_a_bad_columnar_plan_is_refused_naming_the_array_and_layer(tmp_path, edit, message):
    path = _saved(tmp_path, edit)
    with pytest.raises(DocumentError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_plan_columns(path)
    assert main(["export", str(path), "--to", "hawq", "-o", str(tmp_path / "x.json")]) == 2


def test_export_and_schema_read_columnar_plans(tmp_path, capsys):
    problem = random_problem(np.random.default_rng(4), n_layers=6)
    plan = get_solver("dp").solve(problem)
    PlanColumns.from_plan(plan).save(tmp_path / "plan.npz")
    (tmp_path / "plan.json").write_text(plan.model_dump_json(by_alias=True))
    assert main(["export", str(tmp_path / "plan.npz"), "--to", "hawq", "-o", str(tmp_path / "a.json")]) == 0
    assert main(["export", str(tmp_path / "plan.json"), "--to", "hawq", "-o", str(tmp_path / "b.json")]) == 0
    assert (tmp_path / "a.json").read_text() == (tmp_path / "b.json").read_text()
    capsys.readouterr()
    assert main(["schema", "plan-columns"]) == 0
    layout = json.loads(capsys.readouterr().out)
    assert layout["schema"] == "mpq.plan-columns/v1" and "row_option" in layout["arrays"]
    assert main(["schema", "problem-columns"]) == 0
    assert json.loads(capsys.readouterr().out)["arrays"]["row_layer"]["entries"] == "one per (layer, option) row"


def test_a_progress_line_shows_only_for_slow_steps():
    import io

    from mpq.progress import step

    quick, slow = io.StringIO(), io.StringIO()
    with step("quick", after_s=5.0, stream=quick):
        pass
    with step("slow", after_s=0.01, stream=slow):
        time.sleep(0.2)
    assert quick.getvalue() == ""
    assert slow.getvalue().startswith("slow ...\nslow: done in")


def test_columnar_problem_validation_finds_duplicates_quickly():
    cols = mckp.problem_columns(20, "chgroup", 1)
    data = {"header": np.array(json.dumps(cols_header(cols))), **cols.arrays}
    from mpq.columnar import validate_columns

    validate_columns(dict(data))
    names = data["layer_name"].copy()
    names[15] = names[2]
    with pytest.raises(DocumentError, match="layer name 'g2' appears twice"):
        validate_columns({**data, "layer_name": names})
    opts = data["row_option"].copy()
    opts[7] = opts[6]
    with pytest.raises(DocumentError, match="option id appears twice in one layer at row 7"):
        validate_columns({**data, "row_option": opts})


def cols_header(cols: ProblemColumns) -> dict:
    return {"schema": "mpq.problem-columns/v1", "constraints": cols.constraints.model_dump(exclude_none=True)}


def test_a_columnar_plan_writes_the_json_text_the_model_writes():
    problem = random_problem(np.random.default_rng(5), n_layers=8, constraints=("max_bytes",))
    plan = get_solver("auto").solve_columns(ProblemColumns.from_problem(problem))
    a = plan.arrays
    a["group_size"][[1, 2]] = 128
    a["a_bits"][3] = 8
    a["bitops"][4] = -1
    a["latency_ms"][5] = np.nan
    a["layer_module"] = np.array(["", "m", "", "", "", "", "", ""])
    a["layer_channels"][1] = [0, 4]
    a["layer_shape"][6] = 0
    plan.totals = plan.totals.model_copy(update={"bitops": None, "latency_ms": None})
    from mpq.schema import dump_document

    assert plan.json_text() == dump_document(plan.to_plan())


@pytest.mark.parametrize("depth", [0, 2])
def test_a_columnar_plan_whose_layers_all_lack_modules_and_channels_writes_the_models_text(depth):
    """Columns that are alike in every layer (no module, no channels, every shape full or none) are written whole."""
    problem = random_problem(np.random.default_rng(7), n_layers=6, constraints=("max_bytes",))
    plan = get_solver("auto").solve_columns(ProblemColumns.from_problem(problem))
    a = plan.arrays
    a["layer_module"] = np.full(6, "")
    a["layer_channels"] = np.full((6, 2), -1)
    a["layer_shape"] = np.arange(1, 6 * depth + 1).reshape(6, depth)
    from mpq.schema import dump_document

    assert plan.json_text() == dump_document(plan.to_plan())


def test_mpq_solve_json_to_json_plans_as_the_models_do(tmp_path, capsys):
    problem = random_problem(np.random.default_rng(6), n_layers=40, constraints=("max_avg_bits",))
    from mpq.schema import save_document

    save_document(problem, tmp_path / "p.json")
    assert main(["solve", str(tmp_path / "p.json"), "-o", str(tmp_path / "plan.json")]) == 0
    capsys.readouterr()
    assert main(["solve", str(tmp_path / "p.json"), "-o", "-"]) == 0
    printed = Plan.model_validate_json(capsys.readouterr().out)
    written = load_document(tmp_path / "plan.json", Plan)
    models = get_solver("auto").solve(problem)
    assert written.layers == models.layers == printed.layers
    assert written.totals.distortion == pytest.approx(models.totals.distortion)
    assert (written.totals.bytes, written.totals.avg_bits, written.solver.status) == (
        models.totals.bytes, models.totals.avg_bits, models.solver.status)
