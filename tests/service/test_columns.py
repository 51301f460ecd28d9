"""Columnar documents over HTTP: a columnar problem as the body of POST /v1/plans, and plans answered as
mpq.plan-columns/v1 (.npz) that mpq's own readers (export, apply, schema) take."""
from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
from fastapi.testclient import TestClient
from tests.helpers.service import problem

from mpq.columnar import ProblemColumns
from mpq.plan_columns import PlanColumns, load_plan, validate_plan_columns
from mpq.schema import Plan, Problem
from mpq.service.app import create_app
from mpq.service.columns import PLAN_COLUMNS, PROBLEM_COLUMNS
from mpq.service.limits import Limits, ServiceConfig
from mpq.solvers import get_solver

NPZ = {"content-type": PROBLEM_COLUMNS}
ASK_COLUMNS = {"accept": PLAN_COLUMNS}


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    db = tmp_path_factory.mktemp("columns") / "api.db"
    limits = Limits(max_body_bytes=256 * 1024, max_layers=40)
    with TestClient(create_app(ServiceConfig(db_url=f"sqlite:///{db}", solve_workers=0, limits=limits)),
                    base_url="http://127.0.0.1") as c:
        yield c


def npz_of(doc: dict) -> bytes:
    out = io.BytesIO()
    cols = ProblemColumns.from_problem(Problem.model_validate(doc))
    np.savez(out, header=np.array(json.dumps(cols.header())), **cols.arrays)
    return out.getvalue()


def plan_of(body: bytes) -> Plan:
    with np.load(io.BytesIO(body), allow_pickle=False) as f:
        return validate_plan_columns({k: f[k] for k in f.files}).to_plan()


def same_plan(a: Plan, b: Plan) -> None:
    assert [(l.name, l.option) for l in a.layers] == [(l.name, l.option) for l in b.layers]
    assert a.totals == b.totals and a.solver.status == b.solver.status


def test_a_columnar_problem_is_solved_like_its_json_form(client):
    doc = problem(n_layers=12, budget=3.0)
    r = client.post("/v1/plans?solver=auto&options=" + json.dumps({"time_limit_s": 5}), content=npz_of(doc), headers=NPZ)
    assert r.status_code == 201, r.text
    plan = Plan.model_validate(r.json()["plan"])
    same_plan(plan, get_solver("auto").solve(Problem.model_validate(doc)))
    assert client.get(r.headers["location"]).json()["plan"] == r.json()["plan"]


def test_plans_are_answered_as_columns_on_request_and_read_back_by_mpqs_readers(client, tmp_path):
    doc = problem(n_layers=8, budget=3.5)
    json_answer = client.post("/v1/plans", json={"problem": doc})
    plan = Plan.model_validate(json_answer.json()["plan"])
    r = client.post("/v1/plans", json={"problem": doc}, headers=ASK_COLUMNS)
    assert r.status_code == 201 and r.headers["content-type"] == PLAN_COLUMNS and r.headers["location"].startswith("/v1/plans/")
    same_plan(plan_of(r.content), plan)
    stored = client.get(json_answer.headers["location"], headers=ASK_COLUMNS)
    assert stored.status_code == 200 and stored.headers["content-type"] == PLAN_COLUMNS
    (tmp_path / "plan.npz").write_bytes(stored.content)
    again = load_plan(tmp_path / "plan.npz")  # what mpq export and mpq apply read
    assert again == plan
    assert PlanColumns.from_plan(again).totals == plan.totals
    both = client.post("/v1/plans?solver=dp", content=npz_of(doc), headers={**NPZ, **ASK_COLUMNS})
    assert both.status_code == 201 and both.headers["content-type"] == PLAN_COLUMNS
    same_plan(plan_of(both.content), plan)


@pytest.mark.parametrize("path,body,headers,status,needle", [
    ("/v1/plans", b"not a zip", NPZ, 422, "not a columnar problem"),
    ("/v1/plans?options=[1]", None, NPZ, 422, "options: expected a JSON object"),
    ("/v1/plans?solver=nope", None, NPZ, 422, "nope"),
    ("/v1/plans?options=" + json.dumps({"time_limit_s": 1e9}), None, NPZ, 422, "time_limit_s"),
    ("/v1/frontiers", None, NPZ, 415, "Content-Type"),  # only POST /v1/plans reads columns
    ("/v1/searches", None, NPZ, 415, "Content-Type"),
])
def test_bad_columnar_requests_are_refused_by_name(client, path, body, headers, status, needle):
    r = client.post(path, content=npz_of(problem()) if body is None else body, headers=headers)
    assert r.status_code == status, r.text
    assert needle in r.json()["detail"]


def test_columnar_problems_keep_the_services_limits(client):
    big = problem(n_layers=41)
    r = client.post("/v1/plans", content=npz_of(big), headers=NPZ)
    assert r.status_code == 413 and "41 layers" in r.json()["detail"]
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:  # a few KiB that unpack past the body limit
        z.writestr("header.npy", b"\0" * (1024 * 1024))
    r = client.post("/v1/plans", content=bomb.getvalue(), headers=NPZ)
    assert r.status_code == 413 and "unpacked" in r.json()["detail"]
