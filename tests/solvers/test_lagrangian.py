"""Proven optimality on the benchmark instance families (``layer``, ``chgroup``) against brute force and HiGHS."""
from __future__ import annotations

import importlib.util
import itertools
from pathlib import Path

import numpy as np
import pytest

from mpq.solvers._milp import build_milp, choice_from_x, highs_solve
from mpq.solvers._mckp import solve_mckp

_spec = importlib.util.spec_from_file_location("mckp_instances", Path(__file__).parents[2] / "benchmarks" / "mckp_instances.py")
mckp = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mckp)

FAMILIES = ("layer", "chgroup")


def brute_force(cost: np.ndarray, weight: np.ndarray, cap: float) -> float:
    G, K = cost.shape
    combos = np.array(list(itertools.product(range(K), repeat=G)))
    rows = np.arange(G)
    c = cost[rows, combos].sum(1)
    w = weight[rows, combos].sum(1)
    return float(c[w <= cap].min())


def highs_optimum(cost: np.ndarray, weight: np.ndarray, cap: float) -> tuple[float, float]:
    """HiGHS's proven optimum and dual bound, with integer coefficients in the budget row and gap 1e-9
    (the objective scaled near 1e4: HiGHS's absolute tolerances, see ``ilp.build_milp``)."""
    g = int(np.gcd.reduce(weight.ravel()))
    m = build_milp(list(cost), {"cap": list(weight // g)}, {"cap": cap // g}, objective_scale=cost.min(1).sum() / 1e4)
    res = highs_solve(m, gap_rel=1e-9)
    assert res.status == "optimal"
    choice = choice_from_x(m, res.x)
    return float(cost[np.arange(len(cost)), choice].sum()), res.bound


def check_proven(res, cost, weight, cap, best: float) -> None:
    rows = np.arange(len(cost))
    assert res.optimal and res.bound == res.objective
    assert weight[rows, res.choice].sum() <= cap
    assert res.objective == pytest.approx(float(cost[rows, res.choice].sum()), rel=1e-15)
    assert res.objective <= best * (1 + 1e-12)


@pytest.mark.parametrize("family", FAMILIES)
def test_proven_optimum_equals_brute_force(family):
    for seed in range(12):
        cost, weight, cap = mckp.integer_instance(6, family, seed)
        best = brute_force(cost, weight, cap)
        res = solve_mckp(cost, weight, cap, prove=False)
        check_proven(res, cost, weight, cap, best)
        assert res.objective == pytest.approx(best, rel=1e-12)


@pytest.mark.parametrize("family", FAMILIES)
def test_proven_optimum_matches_highs_and_lies_within_its_bound(family):
    for n, seed in ((300, 1), (600, 2)):
        cost, weight, cap = mckp.integer_instance(n, family, seed)
        value, bound = highs_optimum(cost, weight, cap)
        res = solve_mckp(cost, weight, cap, prove=False)
        check_proven(res, cost, weight, cap, value)
        assert res.objective >= bound * (1 - 1e-12)  # HiGHS's dual bound holds for mpq's optimum too
        assert res.objective == pytest.approx(value, rel=1e-9)


def test_a_core_too_large_for_the_dp_goes_to_highs_and_its_better_solution_is_kept():
    cost, weight, cap = mckp.integer_instance(400, "layer", 1001)
    value, _ = highs_optimum(cost, weight, cap)
    res = solve_mckp(cost, weight, cap, prove=True, max_core_groups=0, core_groups=1)
    assert res.core_method == "highs"
    check_proven(res, cost, weight, cap, value)


def test_without_a_proof_the_bound_is_certified():
    cost, weight, cap = mckp.integer_instance(400, "layer", 1001)
    value, _ = highs_optimum(cost, weight, cap)
    for states in (1, 10, 100):  # the DP stops part way: each empty threshold it passed raised the bound
        res = solve_mckp(cost, weight, cap, prove=False, max_core_states=states, core_groups=1)
        rows = np.arange(len(cost))
        assert weight[rows, res.choice].sum() <= cap
        assert res.lp_bound <= res.bound <= value * (1 + 1e-12) <= res.objective * (1 + 1e-12)
        assert res.optimal == (res.objective <= value * (1 + 1e-12) and res.bound == res.objective)


def test_auto_proves_both_families_through_the_solver_interface():
    from mpq.columnar import ProblemColumns
    from mpq.schema import Constraints
    from mpq.solvers import get_solver

    for family in FAMILIES:
        cost, weight, cap = mckp.integer_instance(500, family, 7)
        cols = columns_of(cost, weight, cap)
        plan = get_solver("auto").solve(cols)
        value, _ = highs_optimum(cost, weight, cap)
        assert plan.solver.status == "optimal" and plan.solver.gap == 0
        assert plan.totals.distortion == pytest.approx(value, rel=1e-9)


def columns_of(cost: np.ndarray, weight: np.ndarray, cap: float):
    """A columnar problem whose options carry ``weight`` as bits (budget ``max_bytes`` in bytes would round)."""
    from mpq.columnar import ProblemColumns
    from mpq.schema import Constraints

    G, K = cost.shape
    params = weight[:, 0] // 2
    bits = weight.ravel()
    a = {
        "layer_name": np.array([f"g{i}" for i in range(G)]), "layer_params": params, "layer_macs": np.zeros(G, np.int64),
        "layer_shape": params[:, None].copy(), "layer_module": np.full(G, ""), "layer_channels": np.full((G, 2), -1),
        "option_names": np.array([f"int{b}" for b in (2, 3, 4, 5, 6, 8)]),
        "row_layer": np.repeat(np.arange(G), K), "row_option": np.tile(np.arange(K), G), "row_format": np.zeros(G * K, np.int64),
        "row_structure": np.zeros(G * K, np.int64), "w_bits": np.tile([2, 3, 4, 5, 6, 8], G), "group_size": np.zeros(G * K, np.int64),
        "symmetric": np.ones(G * K, bool), "prune_ratio": np.zeros(G * K), "a_bits": np.zeros(G * K, np.int64),
        "bits": bits, "bytes": -(-bits // 8), "bitops": np.full(G * K, -1), "latency_ms": np.full(G * K, np.nan),
        "distortion": cost.ravel(),
    }
    return ProblemColumns(a, Constraints(max_avg_bits=cap / params.sum()))
