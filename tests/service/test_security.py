"""No request can choose a file, URL or storage on the server, and a web page cannot call a loopback service.

Regression tests: the evolutionary solver's ``storage`` option
reached Optuna from the request (``journal:///FILE`` appended to any file, ``sqlite:///PATH``
created databases), text/plain and form bodies were accepted, and ``Host``/``Origin`` were not
checked, so a page the user merely visited could do it.
"""
from __future__ import annotations

import json
import os

import pytest
from fastapi.testclient import TestClient
from tests.helpers.service import problem

from mpq.service.app import create_app
from mpq.service.limits import ServiceConfig

PORT = 8765


def evolutionary(storage_options: dict) -> dict:
    return {"problem": problem(n_layers=4), "solver": "evolutionary", "options": {"trials": 2, **storage_options}}


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    db = tmp_path_factory.mktemp("sec") / "sec.db"
    config = ServiceConfig(db_url=f"sqlite:///{db}", solve_workers=0, port=PORT)
    with TestClient(create_app(config), base_url=f"http://127.0.0.1:{PORT}") as c:
        yield c


@pytest.fixture()
def victim(tmp_path):
    path = tmp_path / "victim.sh"
    path.write_text("echo hello\n")
    os.utime(path, (1_000_000, 1_000_000))
    return path


def untouched(path) -> bool:
    return path.read_text() == "echo hello\n" and path.stat().st_mtime == 1_000_000


def test_the_issue_repro_text_plain_journal_storage_is_refused_and_the_file_untouched(service, victim, tmp_path):
    body = evolutionary({"storage": f"journal:///{victim}", "study": "$(touch PWNED)"})
    r = service.post("/v1/plans", content=json.dumps(body), headers={"content-type": "text/plain"})
    assert r.status_code == 415 and "application/json" in r.json()["detail"]
    assert untouched(victim)
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize("route", ["/v1/plans", "/v1/searches"])
@pytest.mark.parametrize("storage", ["journal:///{victim}", "sqlite:///{db}", "postgresql://x@localhost/db"])
def test_a_storage_option_is_refused_in_json_too_and_nothing_is_touched(service, victim, tmp_path, route, storage):
    db = tmp_path / "created.db"
    body = evolutionary({"storage": storage.format(victim=victim, db=db), "study": "s1"})
    r = service.post(route, json=body)
    assert r.status_code == 422 and r.json()["detail"].startswith("options.storage:"), r.text
    assert untouched(victim) and not db.exists()


@pytest.mark.parametrize("options, field", [
    ({"study": "$(touch PWNED)"}, "options.study"),
    ({"study": "../../etc/passwd"}, "options.study"),
    ({"study": "x" * 65}, "options.study"),
    ({"study": 5}, "options.study"),
    ({"study": "fine"}, "options.study"),  # well formed, but this server has no search storage
    ({"evaluate_plan": "os:system"}, "options.evaluate_plan"),
    ({"model": "os:system"}, "options.model"),
    ({"low": "/etc/passwd"}, "options.low"),
])
def test_study_names_are_strict_and_no_option_names_a_location(service, tmp_path, options, field):
    r = service.post("/v1/plans", json=evolutionary(options))
    assert r.status_code == 422 and r.json()["detail"].startswith(field + ":"), r.text
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize("content_type", [
    None, "text/plain", "text/plain;charset=utf-8", "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x", "application/xml", "application/jsonx",
])
@pytest.mark.parametrize("route", ["/v1/plans", "/v1/frontiers", "/v1/searches"])
def test_only_json_bodies_are_accepted(service, route, content_type):
    headers = {} if content_type is None else {"content-type": content_type}
    r = service.post(route, content=json.dumps({"problem": problem()}), headers=headers)
    assert r.status_code == 415 and "Content-Type" in r.json()["detail"]


def test_json_with_a_charset_is_accepted(service):
    r = service.post("/v1/plans", content=json.dumps({"problem": problem()}),
                     headers={"content-type": "application/json; charset=utf-8"})
    assert r.status_code == 201, r.text


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8765", "127.0.0.1.nip.io:8765", "127.0.0.1:1",
                                  "localhost:80", "10.0.0.1:8765", "", "[::1]:9"])
def test_a_foreign_host_header_is_refused_dns_rebinding(service, host):
    r = service.get("/v1/plans", headers={"host": host})
    assert r.status_code == 400 and "Host" in r.json()["detail"]
    assert service.post("/v1/plans", json={"problem": problem()}, headers={"host": host}).status_code == 400


@pytest.mark.parametrize("host", ["127.0.0.1:8765", "localhost:8765", "[::1]:8765", "127.0.0.2:8765"])
def test_loopback_host_headers_are_accepted(service, host):
    assert service.get("/healthz", headers={"host": host}).status_code == 200


@pytest.mark.parametrize("origin", ["https://evil.example", "http://127.0.0.1.evil.example", "null", "file://", "http://10.0.0.1:8765"])
def test_a_foreign_origin_is_refused_csrf(service, origin, victim):
    body = evolutionary({"storage": f"journal:///{victim}", "study": "x"})
    r = service.post("/v1/plans", json=body, headers={"origin": origin})
    assert r.status_code == 403 and "Origin" in r.json()["detail"]
    assert untouched(victim)


@pytest.mark.parametrize("origin", ["http://127.0.0.1:8765", "http://localhost:3000", "http://[::1]:8765"])
def test_loopback_origins_are_accepted(service, origin):
    assert service.post("/v1/plans", json={"problem": problem()}, headers={"origin": origin}).status_code == 201


def test_a_public_bind_does_not_check_the_host_but_still_requires_json(tmp_path):
    config = ServiceConfig(db_url=f"sqlite:///{tmp_path / 'p.db'}", solve_workers=0, host="0.0.0.0", port=PORT, token="t")
    auth = {"Authorization": "Bearer t"}
    with TestClient(create_app(config), base_url="http://mpq.example.com") as c:
        assert c.post("/v1/plans", json={"problem": problem()}, headers=auth).status_code == 201
        assert c.post("/v1/plans", content=json.dumps({"problem": problem()}), headers={**auth, "content-type": "text/plain"}).status_code == 415


def test_a_study_lives_in_the_servers_own_search_storage(tmp_path):
    storage = tmp_path / "searches.db"
    config = ServiceConfig(db_url=f"sqlite:///{tmp_path / 'own.db'}", solve_workers=0, search_storage=f"sqlite:///{storage}")
    with TestClient(create_app(config), base_url="http://127.0.0.1") as c:
        r = c.post("/v1/plans", json=evolutionary({"study": "run-1.a"}))
        assert r.status_code == 201, r.text
        assert r.json()["plan"]["solver"]["status"] == "feasible"
    import optuna

    names = [s.study_name for s in optuna.get_all_study_summaries(f"sqlite:///{storage}")]
    assert names == ["run-1.a"]
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(("own.db", "searches.db"))) == []
