"""The Lagrangian solver's exact core (paired groups, LP completion) against a plain Pareto DP."""
from __future__ import annotations

import numpy as np

from mpq.solvers._dp import pareto_dp
from mpq.solvers import _mckp
from mpq.solvers._mckp import SuffixLP, lower_hulls, pair_groups, solve_mckp


def _instance(rng: np.random.Generator, t: int):
    G, K = int(rng.integers(5, 50)), int(rng.integers(2, 7))
    if t % 3 == 0:  # small integers: many ties in cost and weight
        cost, weight = rng.integers(0, 20, (G, K)).astype(float), rng.integers(1, 8, (G, K))
    else:
        cost, weight = rng.random((G, K)) * rng.lognormal(0, 1, (G, 1)), rng.integers(1, 1000, (G, K))
    cap = float(rng.uniform(weight.min(1).sum(), weight.max(1).sum()))
    return cost, weight, cap


def test_proven_lagrangian_matches_the_full_pareto_dp_on_medium_instances():
    rng = np.random.default_rng(5)
    for t in range(120):
        cost, weight, cap = _instance(rng, t)
        res = solve_mckp(cost, weight, cap, prove=True)
        best = pareto_dp(list(cost), list(weight), cap).cost.min()
        assert res.optimal
        assert res.objective == np.float64(best) or abs(res.objective - best) <= 1e-9 * max(1.0, abs(best)), t
        assert weight[np.arange(len(cost)), res.choice].sum() <= cap


def test_pareto_dp_keeps_a_strict_frontier_with_equal_weights():
    front = pareto_dp([np.array([3.0, 1.0, 2.0]), np.array([0.0, 5.0])], [np.array([1, 2, 2]), np.array([0, 0])], 10)
    assert front.weight.tolist() == [1, 2] and front.cost.tolist() == [3.0, 1.0]
    assert front.choice(1).tolist() == [1, 0]


def test_paired_groups_split_back_to_each_groups_option():
    cost = np.array([[4.0, 1.0, 1.0], [2.0, 0.5, 0.1], [1.0, 0.0, 0.0]])
    weight = np.array([[1, 3, 3], [1, 2, 4], [1, 2, 2]])
    allowed = np.array([[True, True, False], [True, True, True], [True, True, False]])  # padding left out
    p_costs, p_weights, split = pair_groups(cost, weight, np.zeros_like(cost), allowed, np.inf)
    assert len(p_costs) == 2  # rows 0 and 1 merged, row 2 alone
    front = pareto_dp(p_costs, p_weights, 6)
    i = int(np.argmin(front.cost))
    choice = split(front.choice(i))
    assert allowed[np.arange(3), choice].all()
    assert cost[np.arange(3), choice].sum() == front.cost[i]
    assert weight[np.arange(3), choice].sum() == front.weight[i] <= 6
    plain = pareto_dp([c[a] for c, a in zip(cost, allowed)], [w[a] for w, a in zip(weight, allowed)], 6)
    assert front.cost[i] == plain.cost.min()


def test_paired_groups_leave_out_combinations_past_the_reduced_cost_limit():
    cost = np.array([[1.0, 0.0], [1.0, 0.0]])
    weight = np.array([[1, 2], [1, 2]])
    rc = np.array([[0.0, 0.6], [0.0, 0.6]])
    p_costs, p_weights, _ = pair_groups(cost, weight, rc, np.ones((2, 2), dtype=bool), 1.0)
    assert sorted(p_weights[0].tolist()) == [2, 3]  # options (1, 1) at reduced cost 1.2 > 1 are left out


def test_unmerged_rows_when_pairs_would_be_too_many(monkeypatch):
    import mpq.solvers._mckp as mckp

    monkeypatch.setattr(mckp, "_PAIR_LIMIT", 0)
    cost = np.array([[1.0, 0.0], [1.0, 0.0], [2.0, 0.5]])
    weight = np.array([[1, 2], [1, 2], [1, 3]])
    allowed = np.array([[True, True], [True, False], [True, True]])
    p_costs, p_weights, split = pair_groups(cost, weight, np.zeros_like(cost), allowed, np.inf)
    assert [len(c) for c in p_costs] == [2, 1, 2]
    assert split(np.array([1, 0, 1])).tolist() == [1, 0, 1]


def test_suffix_lp_is_a_lower_bound_on_every_completion():
    rng = np.random.default_rng(2)
    costs = [rng.random(3) for _ in range(6)]
    weights = [rng.integers(1, 10, 3).astype(float) for _ in range(6)]
    cap = 25.0
    lp = SuffixLP(costs, weights, cap)
    for g in range(5):
        rest = pareto_dp(costs[g + 1:], weights[g + 1:])
        for used in (0.0, 5.0, 10.0):
            room = cap - used
            reachable = rest.cost[rest.weight <= room]
            if reachable.size:
                assert lp(g, np.array([used]))[0] <= reachable.min() + 1e-12


def test_small_hulls_are_the_column_loops_hulls_exactly(monkeypatch):
    """Few groups take the whole-array hull test; it must give the loop's hulls bit for bit (ties,
    unsorted rows, equal weights and points that never survive included)."""
    rng = np.random.default_rng(11)
    for t in range(400):
        G, K = int(rng.integers(1, 30)), int(rng.integers(1, 12))
        if t % 3 == 0:  # small integers: ties in weight and cost
            cost, weight = rng.integers(0, 6, (G, K)).astype(float), rng.integers(1, 5, (G, K))
        elif t % 3 == 1:  # sorted Pareto rows, as a core's merged pairs are
            weight = np.sort(rng.integers(1, 10**6, (G, K)), axis=1)
            cost = np.sort(rng.random((G, K)), axis=1)[:, ::-1].copy()
        else:
            cost, weight = rng.random((G, K)), rng.random((G, K))
        monkeypatch.setattr(_mckp, "_SMALL_HULL_GROUPS", 0)
        loop = lower_hulls(cost, weight)
        monkeypatch.setattr(_mckp, "_SMALL_HULL_GROUPS", 400)
        whole = lower_hulls(cost, weight)
        for field in ("vertices", "n_segments", "efficiency", "d_weight"):
            a, b = getattr(loop, field), getattr(whole, field)
            assert a.dtype == b.dtype and np.array_equal(a, b, equal_nan=True), (t, field)
