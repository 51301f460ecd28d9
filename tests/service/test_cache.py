"""Requests that differ only in their budget reuse one validated, compiled problem, with the same answers."""
from __future__ import annotations

import json

import pytest
from tests.helpers.service import problem

from mpq.service.cache import ProblemCache, split_body
from mpq.service.limits import Limits
from mpq.service.payloads import PlanRequest, make_solver, parse_body
from mpq.service.solving import solve_plan
from mpq.service.store import PlanRecord


def body(budget: float, **extra) -> bytes:
    doc = problem(n_layers=12, budget=budget, seed=4)
    doc.update(extra)
    return json.dumps({"problem": doc, "solver": "auto", "options": {"time_limit_s": 10}}).encode()


def comparable(record: PlanRecord) -> dict:
    plan = json.loads(record.body)
    plan["provenance"]["created"] = ""
    plan["solver"]["seconds"] = 0.0
    return plan


def test_a_cached_problem_gives_the_plan_a_full_validation_gives(monkeypatch):
    import mpq.service.solving as solving

    monkeypatch.setattr(solving, "CACHE", ProblemCache())
    for budget in (2.5, 3.0, 3.5, 4.0, 3.0):
        b = body(budget)
        hit = solving.CACHE.lookup(b, repr((Limits(), None))) is not None
        answer = solve_plan(b, Limits())
        assert "error" not in answer, answer
        direct = PlanRecord.of(make_solver("auto", {"time_limit_s": 10}).solve(parse_body(b, PlanRequest).problem))
        assert comparable(answer["records"][0]) == comparable(direct)
        assert answer["records"][0].avg_bits <= budget
        assert hit == (budget != 2.5)  # every request after the first found the problem validated


def test_the_budget_of_a_cached_problem_is_still_validated(monkeypatch):
    import mpq.service.solving as solving

    monkeypatch.setattr(solving, "CACHE", ProblemCache())
    assert "error" not in solve_plan(body(3.0), Limits())
    status, answer = solve_plan(body(-1.0), Limits())["error"]
    assert status == 422 and "problem.constraints" in answer["detail"] and "max_avg_bits" in answer["detail"]
    no_budget = body(3.0).replace(b'{"max_avg_bits": 3.0}', b'{"max_avg_bits": null}')
    status, answer = solve_plan(no_budget, Limits())["error"]
    assert status == 422 and "sets no constraint" in answer["detail"]
    status, answer = solve_plan(body(0.5), Limits())["error"]
    assert status == 422 and "infeasible" in answer["detail"]


def test_only_bodies_with_one_constraints_object_are_keyed():
    assert split_body(body(3.0)) is not None
    assert split_body(body(3.0))[0] == split_body(body(4.0))[0]
    assert split_body(body(3.0))[0] != split_body(body(3.0, estimator="other"))[0]
    assert split_body(b'{"problem": {"layers": []}}') is None
    twice = body(3.0).replace(b'"solver": "auto"', b'"solver": "auto", "constraints": {"max_bytes": 1}')
    assert split_body(twice) is None


def test_a_body_that_failed_validation_is_never_cached(monkeypatch):
    import mpq.service.solving as solving

    monkeypatch.setattr(solving, "CACHE", ProblemCache())
    bad = body(3.0).replace(b'"solver": "auto"', b'"solver": "no-such-solver"')
    assert solve_plan(bad, Limits())["error"][0] == 422
    assert solving.CACHE.lookup(bad) is None
    with pytest.raises(Exception):
        parse_body(bad.replace(b'"w_bits": 2', b'"w_bits": "x"'), PlanRequest)


def test_a_problem_validated_under_other_limits_is_validated_again(monkeypatch):
    import mpq.service.solving as solving

    monkeypatch.setattr(solving, "CACHE", ProblemCache())
    assert "error" not in solve_plan(body(3.0), Limits())
    status, answer = solve_plan(body(3.5), Limits(max_layers=4))["error"]
    assert status == 413 and "limit of 4" in answer["detail"]
