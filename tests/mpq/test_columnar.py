"""The columnar problem form round-trips, solves like JSON, and is validated."""
from __future__ import annotations

import json

import numpy as np
import pytest
from tests.helpers.problems import HAND, random_problem

from mpq.columnar import ProblemColumns, load_columns
from mpq.problem_files import load_problem
from mpq.errors import DocumentError
from mpq.solvers import get_solver



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
