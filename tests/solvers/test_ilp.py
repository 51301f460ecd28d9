"""The ILP solver: equal to DP and brute force on small problems, several constraints at once, pairwise terms."""
import numpy as np
import pytest

from mpq.errors import SolverNotApplicable
from mpq.plan import violations
from mpq.schema import Problem
from mpq.solvers import solve
from mpq.solvers.compiled import compile_problem

from tests.helpers.problems import brute_force


def random_problem(rng, n_layers=5, n_opts=4, constraint="max_bytes", slack=1.3, ties=False):
    layers = []
    for i in range(n_layers):
        params = int(rng.integers(10, 500))
        opts = []
        for j in range(n_opts):
            bits = int(rng.integers(8 * params // 4, 8 * params))
            opts.append({"id": f"o{j}", "w_bits": j + 2, "bits": bits, "bytes": -(-bits // 8),
                         "bitops": int(rng.integers(1, 1000)), "distortion": float(rng.exponential())})
        layers.append({"name": f"l{i}", "params": params, "options": opts})
    tie_list = [["l0", "l1"]] if ties else []
    p = {"schema": "mpq.problem/v1", "layers": layers, "ties": tie_list, "constraints": {}}
    problem = Problem.model_validate({**p, "constraints": {constraint: 1e15}})
    cp = compile_problem(problem)  # the smallest plan respects the tie
    lo = cp.cap_value(constraint, cp.min_resource(constraint))
    return Problem.model_validate({**p, "constraints": {constraint: lo * slack}})


@pytest.mark.parametrize("constraint", ["max_bytes", "max_avg_bits", "max_bitops"])
@pytest.mark.parametrize("ties", [False, True])
def test_ilp_equals_dp_equals_brute_force(constraint, ties):
    rng = np.random.default_rng(hash((constraint, ties)) % 2**32)
    for _ in range(8):
        problem = random_problem(rng, constraint=constraint, slack=float(rng.uniform(1.05, 1.8)), ties=ties)
        expected = brute_force(problem)[0]
        for name in ("ilp", "dp", "auto"):
            plan = solve(problem, name)
            assert plan.solver.status == "optimal"
            assert plan.totals.distortion == pytest.approx(expected, rel=1e-9, abs=1e-12), name
            assert violations(plan.totals, problem.constraints) == []
            if ties:
                assert plan.layer("l0").option == plan.layer("l1").option


def test_ilp_handles_several_constraints_at_once():
    rng = np.random.default_rng(7)
    for _ in range(5):
        p = random_problem(rng, constraint="max_bytes", slack=1.4)
        bitops_cap = sum(min(o.bitops for o in l.options) for l in p.layers) * 1.5
        p = p.model_copy(update={"constraints": p.constraints.model_copy(update={"max_bitops": bitops_cap})})
        plan = solve(p, "ilp")
        assert plan.totals.distortion == pytest.approx(brute_force(p)[0], rel=1e-9)
        assert plan.totals.bytes <= p.constraints.max_bytes and plan.totals.bitops <= bitops_cap
    with pytest.raises(SolverNotApplicable, match="use --solver ilp"):
        solve(p, "dp")


def test_pairwise_terms_change_the_ilp_choice():
    layer = lambda n: {"name": n, "params": 10, "options": [
        {"id": "a", "w_bits": 2, "bytes": 3, "distortion": 1.0},
        {"id": "b", "w_bits": 4, "bytes": 5, "distortion": 0.0}]}
    base = {"schema": "mpq.problem/v1", "layers": [layer("x"), layer("y")], "constraints": {"max_bytes": 8}}
    plan = solve(Problem.model_validate(base), "ilp")
    assert plan.totals.distortion == 1.0
    # both at 'b' is impossible (10 bytes); x=a,y=b and x=b,y=a cost the same unless a pair term breaks the tie
    with_pair = {**base, "pairs": [{"a": "x", "option_a": "a", "b": "y", "option_b": "b", "distortion": 5.0}]}
    plan = solve(Problem.model_validate(with_pair), "ilp")
    assert (plan.layer("x").option, plan.layer("y").option) == ("b", "a")
    assert plan.totals.distortion == 1.0
