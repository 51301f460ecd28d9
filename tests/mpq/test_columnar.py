"""The columnar problem form round-trips and is validated; `mpq solve` works for every solver."""
from __future__ import annotations

import json

import numpy as np
import pytest
from tests.helpers.problems import random_problem

from mpq.cli import main
from mpq.columnar import ProblemColumns, load_columns, load_problem
from mpq.errors import DocumentError
from mpq.schema import Plan, load_document, save_document
from mpq.solvers import get_solver

HAND = {
    "schema": "mpq.problem/v1",
    "layers": [
        {"name": "features.0", "params": 432, "macs": 110592, "shape": [16, 3, 3, 3], "options": [
            {"id": "int2", "w_bits": 2, "bytes": 140, "bitops": 3538944, "distortion": 0.09},
            {"id": "int4", "w_bits": 4, "bytes": 248, "bitops": 7077888, "distortion": 0.0021},
            {"id": "int8", "w_bits": 8, "bytes": 464, "bitops": 14155776, "distortion": 0.00001}]},
        {"name": "features.3", "params": 4608, "macs": 1179648, "shape": [32, 16, 3, 3], "options": [
            {"id": "int2", "w_bits": 2, "bytes": 1216, "bitops": 37748736, "distortion": 0.05},
            {"id": "int4", "w_bits": 4, "bytes": 2368, "bitops": 75497472, "distortion": 0.004},
            {"id": "int8", "w_bits": 8, "bytes": 4672, "bitops": 150994944, "distortion": 0.00002}]},
        {"name": "fc", "params": 5120, "macs": 5120, "shape": [10, 512], "options": [
            {"id": "int2", "w_bits": 2, "bytes": 1300, "bitops": 163840, "distortion": 0.02},
            {"id": "int4", "w_bits": 4, "bytes": 2580, "bitops": 327680, "distortion": 0.0011},
            {"id": "int8", "w_bits": 8, "bytes": 5140, "bitops": 655360, "distortion": 0.00001}]},
    ],
    "constraints": {"max_bytes": 6000},
}
SOLVERS = ["auto", "ilp", "dp", "lagrangian", "pareto", "greedy", "bisection"]


@pytest.mark.parametrize("solver", SOLVERS)
def test_mpq_solve_works_for_every_solver_on_a_hand_written_problem(tmp_path, solver, capsys):
    (tmp_path / "p.json").write_text(json.dumps(HAND))
    assert main(["solve", str(tmp_path / "p.json"), "--solver", solver, "-o", str(tmp_path / "plan.json")]) == 0
    plan = load_document(tmp_path / "plan.json", Plan)
    assert plan.totals.bytes <= 6000 and plan.solver.name.endswith(solver if solver != "auto" else "dp")
    if solver not in ("greedy", "bisection"):
        assert plan.totals.distortion == pytest.approx(0.00511) and plan.solver.status == "optimal"


def test_mpq_solve_names_the_smallest_budget_when_infeasible(tmp_path, capsys):
    (tmp_path / "p.json").write_text(json.dumps(HAND))
    assert main(["solve", str(tmp_path / "p.json"), "--budget", "bytes=1000"]) == 3  # EXIT_INFEASIBLE
    assert "max_bytes=2656" in capsys.readouterr().err


def test_columnar_file_round_trips_and_solves_like_json(tmp_path):
    problem = random_problem(np.random.default_rng(8), n_layers=30, ties=True, pairs=2, constraints=("max_bytes", "max_bitops"))
    cols = ProblemColumns.from_problem(problem)
    cols.save(tmp_path / "p.npz")
    back = load_columns(tmp_path / "p.npz")
    assert back.to_problem() == problem
    plain = random_problem(np.random.default_rng(9), n_layers=40)
    plain_cols = ProblemColumns.from_problem(plain)
    for name in ("auto", "lagrangian", "dp", "greedy", "ilp"):
        a, b = get_solver(name).solve(plain), get_solver(name).solve(plain_cols)
        assert [l.option for l in a.layers] == [l.option for l in b.layers]
        assert (a.totals.bytes, a.totals.bitops) == (b.totals.bytes, b.totals.bitops)
        assert a.totals.distortion == pytest.approx(b.totals.distortion) and a.totals.avg_bits == pytest.approx(b.totals.avg_bits)


def test_mpq_solve_reads_and_writes_columnar_problems(tmp_path, capsys):
    (tmp_path / "p.json").write_text(json.dumps(HAND))
    assert main(["solve", str(tmp_path / "p.json"), "--problem-out", str(tmp_path / "p.npz"), "-o", str(tmp_path / "a.json")]) == 0
    assert main(["solve", str(tmp_path / "p.npz"), "--solver", "lagrangian", "-o", str(tmp_path / "b.json")]) == 0
    a, b = load_document(tmp_path / "a.json", Plan), load_document(tmp_path / "b.json", Plan)
    assert [l.option for l in a.layers] == [l.option for l in b.layers]
    assert a.totals.bytes == b.totals.bytes and a.totals.distortion == pytest.approx(b.totals.distortion)


def _broken(tmp_path, **change):
    cols = ProblemColumns.from_problem(load_problem_from(HAND, tmp_path))
    arrays = dict(cols.arrays)
    for k, v in change.items():
        arrays[k] = v(arrays[k].copy()) if callable(v) else v
    np.savez(tmp_path / "bad.npz", header=np.array(json.dumps(cols.header())), **arrays)
    return tmp_path / "bad.npz"


def load_problem_from(doc, tmp_path):
    (tmp_path / "h.json").write_text(json.dumps(doc))
    return load_problem(tmp_path / "h.json")


def _set(i, value):
    def f(a):
        a[i] = value
        return a
    return f


@pytest.mark.parametrize("change, message", [
    ({"bytes": _set(4, 999)}, "bytes: must be ceil(bits/8) at row 4 (layer 'features.3', option 'int4')"),
    ({"distortion": _set(2, np.nan)}, "distortion: must be a finite number at row 2 (layer 'features.0', option 'int8')"),
    ({"row_layer": _set(slice(0, 3), 1)}, "layer has no option at layer 'features.0'"),
    ({"row_layer": _set(0, 1)}, "row_layer: rows must be grouped by layer in layer order; it decreases at row 1"),
    ({"row_option": _set(1, 0)}, "option id appears twice in one layer at row 1 (layer 'features.0', option 'int2')"),
    ({"w_bits": _set(0, 40)}, "w_bits: must be in [1, 32] at row 0"),
    ({"layer_params": lambda a: a[:2]}, "layer_params: expected 3 entries"),
])
def test_a_bad_columnar_file_gets_an_error_naming_array_row_and_layer(tmp_path, change, message):
    with pytest.raises(DocumentError) as e:
        load_columns(_broken(tmp_path, **change))
    assert message in str(e.value)


def test_a_columnar_file_without_the_right_schema_is_refused(tmp_path):
    np.savez(tmp_path / "x.npz", header=np.array(json.dumps({"schema": "mpq.problem/v1"})))
    with pytest.raises(DocumentError, match="unsupported version 'mpq.problem/v1'"):
        load_columns(tmp_path / "x.npz")
    (tmp_path / "y.npz").write_text("not a zip")
    with pytest.raises(DocumentError, match="cannot read"):
        load_columns(tmp_path / "y.npz")
