"""The plan-quality benchmark's own mechanics: random plans fit, peers' formats and sizes are mpq's accounting."""
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from mpq.plan import build_plan, violations
from mpq.schema import SolverInfo
from tests.helpers.problems import random_problem

BENCH = Path(__file__).parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def pq():
    sys.path.insert(0, str(BENCH))  # plan_quality imports peers_env from benchmarks/ and its peers' helpers
    try:
        spec = importlib.util.spec_from_file_location("plan_quality", BENCH / "plan_quality.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(BENCH))


def test_random_allocations_fit_the_cap_and_repeat_for_a_seed(pq):
    for seed in range(5):
        problem = random_problem(np.random.default_rng(seed), n_layers=8, slack=0.3)
        choice = pq.random_choice(problem, seed)
        assert choice == pq.random_choice(problem, seed)
        plan = build_plan(problem, choice, SolverInfo(name="random", status="feasible", objective=0.0))
        assert not violations(plan.totals, problem.constraints)


def test_peer_formats_cost_each_format_at_its_average_bits_in_mpq_accounting(pq):
    problem = random_problem(np.random.default_rng(0), n_layers=6, ragged=False, n_options=4)
    formats, sizes = pq.peer_formats(problem)
    assert formats and "fp16" not in {f["id"] for f in formats}
    for f in formats:
        plan = build_plan(problem, {l.name: f["id"] for l in problem.layers}, SolverInfo(name="u", status="feasible", objective=0.0))
        assert f["effective_bits"] == pytest.approx(8 * plan.totals.bytes / problem.total_params)
        assert pq.shared.plan_bytes({l.name: f["id"] for l in problem.layers}, sizes) == plan.totals.bytes


def test_a_peer_plan_missing_a_layer_is_refused_by_name(pq):
    sizes = {"a": {"int4": 10.0}, "b": {"int4": 10.0}}
    with pytest.raises(SystemExit, match="'b'"):
        pq.shared.plan_bytes({"a": "int4"}, sizes)
    with pytest.raises(SystemExit, match="int3"):
        pq.shared.plan_bytes({"a": "int4", "b": "int3"}, sizes)
