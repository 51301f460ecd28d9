"""Issue 13's service findings: every bad document is a 4xx naming the field, never a 500 or internal text."""
from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from tests.helpers.service import problem

from mpq.service.app import create_app
from mpq.service.limits import ServiceConfig


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    db = tmp_path_factory.mktemp("hard") / "hard.db"
    config = ServiceConfig(db_url=f"sqlite:///{db}", solve_workers=0)
    with TestClient(create_app(config), base_url="http://127.0.0.1") as c:
        yield c


def layers_of(doc, **fields):
    for l in doc["layers"]:
        l.update(fields)
    return doc


@pytest.mark.parametrize("edit, field", [
    (lambda d: [o.update(bytes=2**62) for l in d["layers"][:2] for o in l["options"]], "bytes"),  # was a 500 (OverflowError)
    (lambda d: layers_of(d, params=0), "constraints.max_avg_bits"),  # was "ZeroDivisionError"
    (lambda d: d.pop("schema"), "schema"),  # the CLI requires it too
    (lambda d: d["layers"][0].update(params="144"), "layers.0.params"),
    (lambda d: d["layers"][0].update(params=True), "layers.0.params"),
    (lambda d: d["layers"][0]["options"][0].update(bytes="7"), "layers.0.options.0.bytes"),
    (lambda d: d["layers"][0]["options"][0].update(format="fp8_e4m3", w_bits=4), "layers.0.options.0"),
])
def test_bad_documents_are_422_naming_the_field(client, edit, field):
    doc = problem(n_layers=4)
    edit(doc)
    for route in ("/v1/plans", "/v1/frontiers"):
        r = client.post(route, json={"problem": doc})
        assert r.status_code == 422, (route, r.text)
        detail = r.json()["detail"]
        assert field in detail and "Error:" not in detail and "Traceback" not in detail, detail
