"""Sizes are checked for overflow at the boundary, in JSON and in .npz: no total can wrap."""
from __future__ import annotations

import json

import numpy as np
import pytest
from tests.helpers.service import problem as service_problem

from mpq.columnar import ProblemColumns, load_columns
from mpq.errors import DocumentError
from mpq.schema import MAX_SIZE, Problem, parse_document


def huge(n_layers: int, nbytes: int) -> dict:
    doc = service_problem(n_layers=n_layers)
    for l in doc["layers"]:
        l["options"] = [{"id": "int8", "w_bits": 8, "bytes": nbytes, "distortion": 0.0},
                        {"id": "int4", "w_bits": 4, "bytes": 50 // n_layers, "distortion": 1.0}]
    doc["constraints"] = {"max_bytes": 100}
    return doc


@pytest.mark.parametrize("n_layers, nbytes, field", [
    (2, 2**62, "bytes"),  # one value past 2**53
    (16, 2**60, "bytes"),
    (3, 2**50, "layers.*.options.*.bits"),  # each value fits, their sum (in bits) does not
])
def test_json_sizes_past_the_limit_are_refused_naming_the_field(n_layers, nbytes, field):
    with pytest.raises(DocumentError) as e:
        parse_document(huge(n_layers, nbytes), Problem)
    assert field in str(e.value)


@pytest.mark.parametrize("value", ["144", True, "1e3"])
def test_integers_are_strict(value):
    doc = service_problem(n_layers=2)
    doc["layers"][0]["params"] = value
    with pytest.raises(DocumentError) as e:
        parse_document(doc, Problem)
    assert "layers.0.params" in str(e.value)


def test_zero_params_under_an_average_bits_budget_is_named():
    doc = service_problem(n_layers=2)
    for l in doc["layers"]:
        l["params"] = 0
    with pytest.raises(DocumentError) as e:
        parse_document(doc, Problem)
    assert "max_avg_bits" in str(e.value) and "0 params" in str(e.value)


def npz_with(tmp_path, edit) -> str:
    cols = ProblemColumns.from_problem(Problem.model_validate(huge(16, 8)))
    arrays = {k: v.copy() for k, v in cols.arrays.items()}
    edit(arrays)
    path = tmp_path / "p.npz"
    np.savez(path, header=np.array(json.dumps(cols.header())), **arrays)
    return str(path)


def test_npz_sizes_past_the_limit_are_refused_naming_the_array(tmp_path):
    def set_bytes(a):
        a["bytes"][::2] = 2**60  # sixteen layers of 2**60 bytes
        a["bits"][::2] = 2**63 - 8
    with pytest.raises(DocumentError) as e:
        load_columns(npz_with(tmp_path, set_bytes))
    assert "bits" in str(e.value) and "2**53" in str(e.value)

    def near_limit(a):  # every value fits, their sum does not
        a["bits"][::2] = MAX_SIZE // 8
        a["bytes"][::2] = MAX_SIZE // 64
    with pytest.raises(DocumentError) as e:
        load_columns(npz_with(tmp_path, near_limit))
    assert str(e.value).count("bits: summed over the layers") == 1


def test_the_issue_repro_greedy_on_npz_is_refused_on_the_command_line(tmp_path, capsys):
    from mpq.cli import main

    def set_bytes(a):
        a["bytes"][::2] = 2**60
        a["bits"][::2] = 2**63
    path = npz_with(tmp_path, lambda a: (a.__setitem__("bytes", a["bytes"].astype(np.uint64)),
                                         a.__setitem__("bits", a["bits"].astype(np.uint64)), set_bytes(a)))
    assert main(["solve", path, "--solver", "greedy"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "bits" in err and "Traceback" not in err


@pytest.mark.parametrize("ties", [5, "a", [1, 2], {"x": 1}])
def test_npz_header_with_bad_ties_is_named(tmp_path, ties):
    cols = ProblemColumns.from_problem(Problem.model_validate(huge(4, 8)))
    header = {**cols.header(), "ties": ties}
    path = tmp_path / "t.npz"
    np.savez(path, header=np.array(json.dumps(header)), **cols.arrays)
    with pytest.raises(DocumentError) as e:
        load_columns(path)
    assert "header.ties" in str(e.value)


def test_a_plan_never_claims_a_size_its_layers_do_not_sum_to():
    from mpq.solvers import get_solver

    p = Problem.model_validate(huge(16, 8))
    for solver in ("greedy", "dp", "ilp", "lagrangian"):
        plan = get_solver(solver).solve(p)
        assert plan.totals.bytes == sum(l.bytes for l in plan.layers) <= 100
