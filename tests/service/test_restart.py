"""kill -9 the server mid-search, start it again on the same database: nothing is lost."""
from __future__ import annotations

import time

import httpx
from tests.helpers.service import Server, problem


def poll(http: httpx.Client, sid: str, until, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = http.get(f"/v1/searches/{sid}").json()
        if until(state):
            return state
        time.sleep(0.1)
    raise AssertionError(f"search {sid} stuck at {state}")


def test_plans_survive_kill_9_and_the_running_search_is_resumed(tmp_path):
    db = f"sqlite:///{tmp_path / 'restart.db'}"
    first = Server(db, "--workers", "1").wait_ready()
    try:
        with httpx.Client(base_url=first.url, timeout=60) as http:
            plans = {}
            for seed in range(4):
                r = http.post("/v1/plans", json={"problem": problem(seed=seed)})
                assert r.status_code == 201
                plans[r.json()["id"]] = r.json()
            r = http.post("/v1/searches", json={"problem": problem(seed=7), "solver": "slow-test",
                                                "options": {"steps": 30, "step_s": 0.1}})
            sid = r.json()["id"]
            before = poll(http, sid, lambda s: s["status"] == "running" and s["progress"] > 0)
            assert before["best"] is not None
    finally:
        first.kill()  # SIGKILL: no shutdown handler runs

    second = Server(db, "--workers", "1", port=first.port).wait_ready()
    try:
        with httpx.Client(base_url=second.url, timeout=60) as http:
            for pid, answer in plans.items():
                assert http.get(f"/v1/plans/{pid}").json() == answer
            assert http.get("/v1/plans").json()["total"] == len(plans)
            resumed = poll(http, sid, lambda s: s["restarts"] == 1 or s["status"] == "failed", timeout=30)
            assert resumed["status"] in ("queued", "running", "done"), resumed
            assert "stopped" in resumed["error"]  # it says why it was restarted
            done = poll(http, sid, lambda s: s["status"] in ("done", "failed"))
            assert done["status"] == "done" and done["restarts"] == 1 and done["error"] is None
            assert http.get(f"/v1/plans/{done['plan_id']}").json()["plan"] == done["best"]
    finally:
        second.stop()
