"""The HTTP service through its real app (FastAPI's TestClient, lifespan included)."""
from __future__ import annotations

import os
import time

import pytest
from fastapi.testclient import TestClient
from tests.helpers.service import problem

from mpq.schema import Problem
from mpq.service.app import create_app
from mpq.service.limits import Limits, ServiceConfig
from mpq.service.store import PlanRecord, Store
from mpq.solvers import solve


def wait_for(client, sid, statuses, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = client.get(f"/v1/searches/{sid}").json()
        if state["status"] in statuses:
            return state
        time.sleep(0.05)
    raise AssertionError(f"search {sid} never reached {statuses}: {state}")


def test_post_plan_answers_a_stored_plan_within_budget_with_the_direct_objective(client):
    doc = problem(budget=3.0)
    r = client.post("/v1/plans", json={"problem": doc, "solver": "auto", "options": {"time_limit_s": 10}})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["plan"]["schema"] == "mpq.plan/v1"
    assert body["plan"]["totals"]["avg_bits"] <= 3.0
    direct = solve(Problem.model_validate(doc))
    assert body["plan"]["solver"]["objective"] == pytest.approx(direct.solver.objective, rel=1e-12)
    again = client.get(f"/v1/plans/{body['id']}")
    assert again.status_code == 200 and again.json() == body
    assert "solve;dur=" in r.headers["server-timing"]


def test_plan_list_is_paged_and_filtered_by_model_fingerprint(client):
    ids = {seed: client.post("/v1/plans", json={"problem": problem(seed=seed)}).json()["id"] for seed in (11, 12, 12)}
    page = client.get("/v1/plans", params={"fingerprint": "sha256:tiny12"}).json()
    assert page["total"] == 2 and {i["fingerprint"] for i in page["items"]} == {"sha256:tiny12"}
    assert ids[12] in {i["id"] for i in page["items"]}
    first = client.get("/v1/plans", params={"limit": 1, "offset": 0}).json()
    second = client.get("/v1/plans", params={"limit": 1, "offset": 1}).json()
    assert len(first["items"]) == len(second["items"]) == 1 and first["items"][0]["id"] != second["items"][0]["id"]
    assert first["total"] >= 3
    bad = client.get("/v1/plans", params={"limit": 0})
    assert bad.status_code == 422 and "limit" in bad.json()["detail"]


def test_unknown_ids_are_404(client):
    assert client.get("/v1/plans/nope").status_code == 404
    assert client.get("/v1/searches/nope").status_code == 404
    assert client.delete("/v1/searches/nope").status_code == 404


def test_infeasible_budget_is_422_with_the_smallest_feasible_budget(client):
    r = client.post("/v1/plans", json={"problem": problem(budget=1.0)})
    assert r.status_code == 422
    assert r.json()["minimum"]["max_avg_bits"] == pytest.approx(2.0, rel=1e-3)
    assert "max_avg_bits" in r.json()["detail"]


def test_unknown_solver_is_422_listing_the_known_ones(client):
    r = client.post("/v1/plans", json={"problem": problem(), "solver": "simulated-annealing"})
    assert r.status_code == 422
    assert "simulated-annealing" in r.json()["detail"] and {"auto", "dp", "ilp"} <= set(r.json()["known"])


@pytest.mark.parametrize("mutate, field", [
    (lambda d: d["problem"]["layers"][1]["options"][0].update(bytes=-1), "layers.1.options.0.bytes"),
    (lambda d: d["problem"].update(schema="mpq.problem/v9"), "schema"),
    (lambda d: d["problem"]["layers"][0].pop("params"), "layers.0.params"),
    (lambda d: d["problem"].update(constraints={}), "constraints"),
    (lambda d: d.pop("problem"), "problem"),
    (lambda d: d.update(surprise=1), "surprise"),
    (lambda d: d.update(options={"time_limit_s": -3}), "options.time_limit_s"),
    (lambda d: d.update(options={"backend": "gurobi"}, solver="ilp"), "options"),
    (lambda d: d.update(options={"should_stop": True}), "options.should_stop"),
])
def test_malformed_request_is_422_naming_the_field(client, mutate, field):
    body = {"problem": problem()}
    mutate(body)
    r = client.post("/v1/plans", json=body)
    assert r.status_code == 422, r.text
    assert field in r.json()["detail"]


def test_body_that_is_not_json_is_422(client):
    r = client.post("/v1/plans", content=b'{"problem": [1, 2', headers={"content-type": "application/json"})
    assert r.status_code == 422 and "not a JSON document" in r.json()["detail"]


def test_requests_over_the_limits_get_413_or_422_saying_which_limit(tmp_path):
    limits = Limits(max_body_bytes=20_000, max_layers=4, max_plan_seconds=5)
    config = ServiceConfig(db_url=f"sqlite:///{tmp_path / 'l.db'}", solve_workers=0, limits=limits)
    with TestClient(create_app(config), base_url="http://127.0.0.1") as c:
        big = c.post("/v1/plans", json={"problem": problem(n_layers=200)})
        assert big.status_code == 413 and "20000 bytes" in big.json()["detail"]
        wide = c.post("/v1/plans", json={"problem": problem(n_layers=6)})
        assert wide.status_code == 413 and "limit of 4" in wide.json()["detail"]
        slow = c.post("/v1/plans", json={"problem": problem(n_layers=3), "options": {"time_limit_s": 60}})
        assert slow.status_code == 422 and "limit of 5 s" in slow.json()["detail"]
        assert c.post("/v1/plans", json={"problem": problem(n_layers=3)}).status_code == 201


def test_a_token_is_required_when_configured(tmp_path):
    config = ServiceConfig(db_url=f"sqlite:///{tmp_path / 't.db'}", solve_workers=0, token="s3cret")
    with TestClient(create_app(config), base_url="http://127.0.0.1") as c:
        assert c.post("/v1/plans", json={"problem": problem()}).status_code == 401
        wrong = c.get("/v1/plans", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and "Bearer" in wrong.json()["detail"]
        ok = c.post("/v1/plans", json={"problem": problem()}, headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 201
        assert c.get("/healthz").status_code == 200


def test_frontier_points_are_pareto_optimal_stored_plans(client):
    doc = problem(n_layers=5, budget=6.0)
    r = client.post("/v1/frontiers", json={"problem": doc, "max_points": 8})
    assert r.status_code == 200, r.text
    points = r.json()["points"]
    assert 2 <= len(points) <= 8
    assert all(a["bytes"] < b["bytes"] and a["distortion"] > b["distortion"] for a, b in zip(points, points[1:]))
    last = client.get(f"/v1/plans/{points[-1]['plan_id']}").json()["plan"]
    assert last["totals"]["bytes"] == points[-1]["bytes"]
    assert last["solver"]["objective"] == pytest.approx(solve(Problem.model_validate(doc)).solver.objective)
    two = problem()
    two["constraints"]["max_bytes"] = 10**6
    assert client.post("/v1/frontiers", json={"problem": two}).status_code == 422


def test_search_runs_in_the_background_and_stores_its_plan(client):
    doc = problem(seed=3)
    r = client.post("/v1/searches", json={"problem": doc, "solver": "slow-test", "options": {"steps": 5, "step_s": 0.05}})
    assert r.status_code == 202 and r.json()["status"] == "queued"
    state = wait_for(client, r.json()["id"], {"done", "failed"})
    assert state["status"] == "done", state
    assert state["progress"] == 1.0 and state["best"]["totals"]["avg_bits"] <= 3.0
    stored = client.get(f"/v1/plans/{state['plan_id']}").json()["plan"]
    assert stored["solver"]["objective"] == pytest.approx(solve(Problem.model_validate(doc)).solver.objective)


def test_cancelling_a_running_search_stops_it(client):
    r = client.post("/v1/searches", json={"problem": problem(), "solver": "slow-test", "options": {"steps": 400, "step_s": 0.05}})
    sid = r.json()["id"]
    running = wait_for(client, sid, {"running"})
    deadline = time.monotonic() + 20
    while running["progress"] == 0 and time.monotonic() < deadline:  # wait for the first progress report
        time.sleep(0.05)
        running = client.get(f"/v1/searches/{sid}").json()
    assert running["best"] is not None and 0 < running["progress"] < 1
    cancelled = client.delete(f"/v1/searches/{sid}")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    time.sleep(0.5)
    assert client.get(f"/v1/searches/{sid}").json()["status"] == "cancelled"
    assert client.delete(f"/v1/searches/{sid}").status_code == 409


def test_search_with_a_refused_setting_is_422_at_submission(client):
    r = client.post("/v1/searches", json={"problem": problem(), "solver": "ilp", "options": {"backend": "gurobi"}})
    assert r.status_code == 422 and "backend" in r.json()["detail"]


def test_orphaned_search_is_requeued_then_failed_with_the_reason(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'o.db'}")
    sid = store.add_search('{"schema": "mpq.problem/v1"}', "slow-test", {})
    assert store.claim_next_search("server-a")["id"] == sid
    assert store.recover_orphans(stale_after_s=60, max_restarts=1) == {"requeued": [], "failed": []}  # still beating
    assert store.recover_orphans(stale_after_s=-1, max_restarts=1)["requeued"] == [sid]
    assert store.search(sid)["status"] == "queued" and store.search(sid)["restarts"] == 1
    assert store.claim_next_search("server-b")["id"] == sid
    assert not store.beat(sid, "server-a")  # the old owner lost it
    assert store.recover_orphans(stale_after_s=-1, max_restarts=1)["failed"] == [sid]
    row = store.search(sid)
    assert row["status"] == "failed" and "server running this search stopped" in row["error"]
    store.close()


def test_a_failed_write_leaves_no_plan_behind(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'w.db'}")
    good = PlanRecord(body="{}", fingerprint="f", model_name=None, solver="dp", status="optimal", bytes=1, avg_bits=1.0, distortion=0.0)
    bad = PlanRecord(body=None, fingerprint="f", model_name=None, solver="dp", status="optimal", bytes=1, avg_bits=1.0, distortion=0.0)
    with pytest.raises(Exception):
        store.add_plans([good, bad])  # the second row breaks NOT NULL: the whole transaction rolls back
    assert store.list_plans("f", 10, 0)[0] == 0
    store.close()


def test_registries_health_and_openapi(client):
    assert {"auto", "dp", "ilp", "slow-test"} <= {s["name"] for s in client.get("/v1/solvers").json()["solvers"]}
    assert "weight-error" in {e["name"] for e in client.get("/v1/estimators").json()["estimators"]}
    assert client.get("/healthz").json()["status"] == "ok"
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/plans", "/v1/plans/{plan_id}", "/v1/frontiers", "/v1/searches", "/v1/searches/{search_id}",
            "/v1/solvers", "/v1/estimators", "/healthz"} <= set(paths)
    assert "requestBody" in paths["/v1/plans"]["post"]


def test_serve_refuses_a_public_address_without_a_token(capsys, monkeypatch):
    from mpq.cli import main

    monkeypatch.delenv("MPQ_TOKEN", raising=False)
    assert main(["serve", "--host", "0.0.0.0", "--port", "1"]) == 2
    assert "--token" in capsys.readouterr().err


@pytest.mark.parametrize("host, loopback", [
    ("127.0.0.1", True), ("127.0.0.2", True), ("localhost", True), ("::1", True), ("[::1]", True),
    ("0.0.0.0", False), ("10.1.2.3", False), ("::", False), ("build-box.internal", False),
])
def test_only_loopback_addresses_may_serve_without_a_token(host, loopback):
    from mpq.service.cli import is_loopback

    assert is_loopback(host) is loopback


def test_a_solve_past_the_time_limit_is_stopped_and_the_service_goes_on(tmp_path):
    limits = Limits(max_plan_seconds=0.5, plan_grace_s=0.5)
    config = ServiceConfig(db_url=f"sqlite:///{tmp_path / 's.db'}", solve_workers=1, limits=limits, plugins=("tests.helpers.slow_solver",))
    with TestClient(create_app(config), base_url="http://127.0.0.1") as c:
        t0 = time.monotonic()
        slow = c.post("/v1/plans", json={"problem": problem(), "solver": "slow-test", "options": {"steps": 300, "step_s": 0.1}})
        assert slow.status_code == 422 and "POST /v1/searches" in slow.json()["detail"]
        assert time.monotonic() - t0 < 10
        assert c.post("/v1/plans", json={"problem": problem()}).status_code == 201


@pytest.mark.skipif(not os.environ.get("MPQ_TEST_POSTGRES_URL"), reason="set MPQ_TEST_POSTGRES_URL to test a PostgreSQL store")
def test_the_service_runs_on_postgresql():
    config = ServiceConfig(db_url=os.environ["MPQ_TEST_POSTGRES_URL"], solve_workers=0, plugins=("tests.helpers.slow_solver",))
    with TestClient(create_app(config), base_url="http://127.0.0.1") as c:
        answer = c.post("/v1/plans", json={"problem": problem(seed=21)}).json()
        assert c.get(f"/v1/plans/{answer['id']}").json() == answer
        sid = c.post("/v1/searches", json={"problem": problem(), "solver": "slow-test", "options": {"steps": 2, "step_s": 0.01}}).json()["id"]
        assert wait_for(c, sid, {"done", "failed"})["status"] == "done"
