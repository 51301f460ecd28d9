"""HTTP conventions: Location on creation, RFC 9457 problem JSON, paged search listing, and the client's
retries, $MPQ_TOKEN and page iteration."""
from __future__ import annotations

import httpx
import pytest
from fastapi.testclient import TestClient
from tests.helpers.service import problem

from mpq.client import Client, ServiceError


def test_created_plans_and_accepted_searches_carry_a_location_that_resolves(client):
    r = client.post("/v1/plans", json={"problem": problem(budget=3.0)})
    assert r.status_code == 201 and r.headers["location"] == f"/v1/plans/{r.json()['id']}"
    assert client.get(r.headers["location"]).status_code == 200
    s = client.post("/v1/searches", json={"problem": problem(budget=3.0), "solver": "auto", "options": {}})
    assert s.status_code == 202 and s.headers["location"] == f"/v1/searches/{s.json()['id']}"
    assert client.get(s.headers["location"]).json()["id"] == s.json()["id"]


@pytest.mark.parametrize("method,path,kwargs,status", [
    ("get", "/v1/plans/nope", {}, 404),
    ("post", "/v1/plans", {"json": {"problem": {"schema": "mpq.problem/v9"}}}, 422),
    ("post", "/v1/plans", {"content": b"x", "headers": {"content-type": "text/plain"}}, 415),
])
def test_errors_are_problem_json_that_keeps_detail(client, method, path, kwargs, status):
    r = getattr(client, method)(path, **kwargs)
    assert r.status_code == status
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["status"] == status and body["type"] == "about:blank" and body["title"] and body["detail"]


def test_infeasible_budget_problem_json_keeps_the_minimum(client):
    r = client.post("/v1/plans", json={"problem": problem(budget=0.5)})
    assert r.status_code == 422 and r.headers["content-type"].startswith("application/problem+json")
    assert "minimum" in r.json() and r.json()["status"] == 422 and r.json()["detail"]


def test_searches_are_listed_newest_first_in_pages(client):
    ids = [client.post("/v1/searches", json={"problem": problem(budget=3.0, seed=i), "solver": "auto", "options": {}}).json()["id"]
           for i in range(3)]
    page = client.get("/v1/searches", params={"limit": 2, "offset": 0}).json()
    assert page["limit"] == 2 and len(page["items"]) == 2 and page["total"] >= 3
    listed = page["items"] + client.get("/v1/searches", params={"limit": 2, "offset": 2}).json()["items"]
    order = [i["id"] for i in listed]
    assert [order.index(i) for i in reversed(ids)] == sorted(order.index(i) for i in ids)
    assert client.get("/v1/searches", params={"status": "bogus"}).status_code == 422


def _client_over(app_client: TestClient, **kw) -> Client:
    c = Client("http://127.0.0.1", **kw)
    c._http = app_client  # TestClient is an httpx.Client on the app
    return c


def test_client_iterates_pages_and_reads_the_token_from_the_environment(client, monkeypatch):
    for i in range(3):
        client.post("/v1/plans", json={"problem": problem(budget=3.0, seed=10 + i)})
    c = _client_over(client)
    every = list(c.iter_plans(page_size=2))
    assert len(every) == client.get("/v1/plans").json()["total"] and len({p.id for p in every}) == len(every)
    assert len(list(c.iter_searches(page_size=2))) == client.get("/v1/searches").json()["total"]
    monkeypatch.setenv("MPQ_TOKEN", "s3cret")
    with Client("http://127.0.0.1:9") as tc:
        assert tc._http.headers["authorization"] == "Bearer s3cret"


def test_client_retries_idempotent_calls_but_sends_a_post_once(monkeypatch):
    calls = {"GET": 0, "POST": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        calls[request.method] += 1
        if calls[request.method] < 3:
            return httpx.Response(503, json={"detail": "busy"}, headers={"Retry-After": "0"})
        return httpx.Response(200, json={"status": "ok", "version": "x"})

    c = Client("http://mpq.test", retries=3, backoff_s=0.0)
    c._http = httpx.Client(base_url="http://mpq.test", transport=httpx.MockTransport(handler))
    assert c.health()["status"] == "ok" and calls["GET"] == 3
    with pytest.raises(ServiceError, match="503"):
        c.start_search(problem(), "auto")
    assert calls["POST"] == 1
