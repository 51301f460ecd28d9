"""The service as users run it: ``mpq serve`` on a loopback port, driven by the client, the CLI,
concurrent callers and schemathesis."""
from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from tests.helpers.service import Server, problem

from mpq.client import Client, ServiceError
from mpq.errors import PlanInfeasible
from mpq.schema import Problem
from mpq.solvers import solve


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    db = tmp_path_factory.mktemp("live") / "live.db"
    srv = Server(f"sqlite:///{db}", "--workers", "2").wait_ready()
    yield srv
    srv.stop()


def test_fifty_concurrent_solves_are_all_correct(server):
    doc = problem(n_layers=24, seed=5)
    budgets = [2.2 + 0.1 * i for i in range(50)]
    expected = {}
    for b in budgets:
        p = Problem.model_validate({**doc, "constraints": {"max_avg_bits": b}})
        expected[b] = solve(p).solver.objective

    def one(budget):
        with httpx.Client(base_url=server.url, timeout=60) as http:
            r = http.post("/v1/plans", json={"problem": {**doc, "constraints": {"max_avg_bits": budget}}})
            return budget, r.status_code, r.json()

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(one, budgets))
    assert all(code == 201 for _, code, _ in results), [body for _, code, body in results if code != 201][:2]
    assert len({body["id"] for _, _, body in results}) == 50
    for budget, _, body in results:
        plan = body["plan"]
        assert plan["totals"]["avg_bits"] <= budget
        assert plan["solver"]["objective"] == pytest.approx(expected[budget], rel=1e-12)


def test_client_mirrors_the_endpoints(server):
    doc = problem(seed=8)
    with Client(server.url) as client:
        plan = client.solve(doc, time_limit_s=5)
        assert plan.totals.avg_bits <= 3.0
        answer = client.create_plan(Problem.model_validate(doc))
        assert client.get_plan(answer.id) == answer.plan
        page = client.list_plans(fingerprint="sha256:tiny8")
        assert page.total == 2 and all(i.fingerprint == "sha256:tiny8" for i in page.items)
        points = client.frontier(doc, max_points=5)
        assert client.get_plan(points[-1].plan_id).totals.bytes == points[-1].bytes
        with pytest.raises(PlanInfeasible) as infeasible:
            client.solve(problem(budget=1.5))
        assert infeasible.value.minimum["max_avg_bits"] == pytest.approx(2.0, rel=1e-3)
        with pytest.raises(ServiceError) as unknown:
            client.solve(doc, solver="nope")
        assert unknown.value.status == 422 and "nope" in str(unknown.value)
        sid = client.start_search(doc, solver="slow-test", steps=3, step_s=0.01)
        state = client.wait_search(sid, timeout=60, poll_s=0.1)
        assert state.status == "done" and state.best is not None and client.get_plan(state.plan_id) == state.best
        assert "dp" in {s["name"] for s in client.solvers()}
        assert client.health()["status"] == "ok"


def test_cli_solve_with_server_gives_the_local_plan(server, tmp_path, capsys):
    from mpq.cli import main

    path = tmp_path / "problem.json"
    path.write_text(json.dumps(problem(seed=9)))
    out = tmp_path / "plan.json"
    assert main(["solve", str(path), "--server", server.url, "-o", str(out)]) == 0
    remote = json.loads(out.read_text())
    local = solve(Problem.model_validate(problem(seed=9)))
    assert [l["option"] for l in remote["layers"]] == [l.option for l in local.layers]
    assert main(["solve", str(path), "--server", server.url, "--budget", "avg_bits=1"]) == 3  # EXIT_INFEASIBLE
    assert "smallest plan needs max_avg_bits=2" in capsys.readouterr().err


def test_cli_solve_evolutionary_from_npz_takes_params_locally_and_on_the_server(server, tmp_path, capsys):
    from mpq.cli import main
    from mpq.problem_files import save_problem

    path = save_problem(Problem.model_validate(problem(seed=10)), tmp_path / "problem.npz")
    for where in ([], ["--server", server.url]):
        out = tmp_path / f"plan{len(where)}.json"
        assert main(["solve", str(path), "--solver", "evolutionary", "--param", "trials=12", "--param", "population=4",
                     "--seed", "1", *where, "-o", str(out)]) == 0, capsys.readouterr().err
        plan = json.loads(out.read_text())
        assert plan["solver"]["name"] == "evolutionary" and plan["totals"]["avg_bits"] <= 3.0
    assert main(["solve", str(path), "--solver", "evolutionary", "--param", "trials=0", "--server", server.url]) == 2
    assert "setting trials=0: expected a value >= 1" in capsys.readouterr().err


def test_cli_frontier_with_server_matches_the_local_frontier_within_budget(server, tmp_path):
    from mpq.cli import main

    path = tmp_path / "problem.json"
    path.write_text(json.dumps(problem(seed=4)))
    assert main(["frontier", str(path), "--server", server.url, "--max-points", "0", "-o", str(tmp_path / "remote.json")]) == 0
    assert main(["frontier", str(path), "--axis", "bits", "--within-budget", "--max-points", "100", "-o", str(tmp_path / "local.json")]) == 0
    remote, local = (json.loads((tmp_path / f).read_text()) for f in ("remote.json", "local.json"))
    assert remote["points"] and all(p["within_budget"] for p in remote["points"])
    assert [p["distortion"] for p in remote["points"]] == pytest.approx([p["distortion"] for p in local["points"]], rel=1e-9)
    assert [p["choice"] for p in remote["points"]] == [p["choice"] for p in local["points"]]


#: the fuzzing below stops generating requests after this many seconds
FUZZ_SECONDS = 25


def test_fuzzed_requests_never_get_a_server_error(server):
    """Every operation, with valid and invalid inputs drawn from the OpenAPI schema: no 5xx, ever."""
    schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 11
    deadline = time.monotonic() + FUZZ_SECONDS
    seen = []

    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=6, deadline=None, phases=[Phase.explicit, Phase.generate], derandomize=True,
                      database=None, suppress_health_check=list(HealthCheck))
            def call(case):
                if time.monotonic() > deadline:
                    return
                response = case.call(base_url=server.url, timeout=30)
                seen.append(response.status_code)
                assert response.status_code < 500, (
                    f"{case.method} {case.formatted_path} answered {response.status_code}: {response.text[:500]}"
                )

            try:
                call()
            except Unsatisfiable:  # no invalid input exists for it (e.g. GET /healthz takes no parameters)
                assert mode is GenerationMode.NEGATIVE, operation.label
    assert len(seen) >= 40 and any(code < 300 for code in seen) and any(400 <= code < 500 for code in seen)


def test_fuzzed_bodies_with_foreign_headers_or_storage_options_are_refused(server, tmp_path):
    """Security cases on the real server: valid bodies drawn from the schema, sent as a web page or a
    careless caller would (text/plain, a form, a rebound Host, a foreign Origin, a storage option)."""
    victim = tmp_path / "victim.sh"
    victim.write_text("echo hello\n")
    schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
    posts = [op for op in (r.ok() for r in schema.get_all_operations()) if op.method.upper() == "POST"]
    assert len(posts) == 3
    attacks = [
        ({"Content-Type": "text/plain"}, None, 415),
        ({"Content-Type": "application/x-www-form-urlencoded"}, None, 415),
        ({"Host": "attacker.example:%d" % server.port}, None, 400),
        ({"Origin": "https://attacker.example"}, None, 403),
        ({}, {"storage": f"journal:///{victim}", "study": "s"}, 422),
        ({}, {"storage": f"sqlite:///{tmp_path / 'made.db'}"}, 422),
    ]
    seen = []
    for operation in posts:

        @given(case=operation.as_strategy(generation_mode=GenerationMode.POSITIVE))
        @settings(max_examples=3, deadline=None, phases=[Phase.generate], derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def call(case):
            for headers, options, expected in attacks:
                if options is not None:
                    if operation.path == "/v1/frontiers":  # takes no solver options
                        continue
                    case.body = {**case.body, "solver": "evolutionary", "options": options}
                response = case.call(base_url=server.url, headers=headers, timeout=30)
                seen.append(response.status_code)
                assert response.status_code == expected, (operation.label, headers, options, response.text[:300])

        call()
    assert len(seen) >= 3 * 4 * 3 and seen.count(422) >= 2 * 2 * 3
    assert victim.read_text() == "echo hello\n" and not (tmp_path / "made.db").exists()
