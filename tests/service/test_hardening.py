"""The service's hardening: every bad document is a 4xx naming the field, never a 500 or internal text."""
from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from tests.helpers.service import problem

from mpq.service.app import create_app
from mpq.service.limits import ServiceConfig


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


def test_a_solver_that_ignores_its_time_limit_is_stopped_in_its_worker_and_others_go_on(tmp_path):
    """The stall: a solve past its limit held a worker for 65 s whatever time_limit_s asked. Now the
    worker stops it at its own limit plus grace, with a 422 naming the limit, and other requests are served."""
    import time
    from concurrent.futures import ThreadPoolExecutor

    from mpq.service.limits import Limits

    limits = Limits(plan_grace_s=0.5)
    config = ServiceConfig(db_url=f"sqlite:///{tmp_path / 's.db'}", solve_workers=2, limits=limits,
                           plugins=("tests.helpers.slow_solver",))
    with TestClient(create_app(config), base_url="http://127.0.0.1") as c:
        slow = {"problem": problem(), "solver": "slow-test", "options": {"steps": 600, "step_s": 0.1, "time_limit_s": 1}}
        t0 = time.monotonic()
        with ThreadPoolExecutor(2) as pool:
            stuck = pool.submit(c.post, "/v1/plans", json=slow)
            time.sleep(0.2)
            fast = c.post("/v1/plans", json={"problem": problem(), "options": {"time_limit_s": 5}})
            assert fast.status_code == 201 and time.monotonic() - t0 < 1.5  # not queued behind the slow one
            r = stuck.result()
        assert r.status_code == 422 and "time_limit_s" in r.json()["detail"], r.text
        assert time.monotonic() - t0 < 6  # 1 s limit + 0.5 s grace, not the 65 s of the service's cap


def test_a_body_that_never_ends_gets_408_and_too_many_requests_get_503(tmp_path):
    import asyncio

    import httpx

    from mpq.service.limits import Limits

    limits = Limits(body_timeout_s=0.5, max_concurrent=1)
    app = create_app(ServiceConfig(db_url=f"sqlite:///{tmp_path / 'b.db'}", solve_workers=0, limits=limits))

    async def run():
        async def endless():
            yield b'{"problem": '
            await asyncio.sleep(30)
            yield b"{}}"

        transport = httpx.ASGITransport(app=app)
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1", timeout=20) as client:
                first = asyncio.create_task(client.post("/v1/plans", content=endless(),
                                                        headers={"content-type": "application/json"}))
                await asyncio.sleep(0.1)
                second = await client.post("/v1/plans", json={"problem": problem()})
                return await first, second

    slow, busy = asyncio.run(run())
    assert slow.status_code == 408 and "0.5 s" in slow.json()["detail"]
    assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
