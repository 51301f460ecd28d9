"""The exact size/distortion frontier (mpq.solvers.frontier): monotone, optimal at every size, additive only."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.helpers.problems import brute_force, random_problem

from mpq.errors import SolverNotApplicable
from mpq.schema import Constraints
from mpq.solvers.frontier import frontier


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(2, 5), ties=st.booleans(), axis=st.sampled_from(["bytes", "bits"]))
def test_frontier_is_monotone_and_every_point_is_optimal_at_its_size(seed, n, ties, axis):
    problem = random_problem(np.random.default_rng(seed), n_layers=n, ties=ties)
    front = frontier(problem, axis)
    sizes = [p.bytes if axis == "bytes" else p.avg_bits for p in front.points]
    dist = [p.distortion for p in front.points]
    assert all(b > a for a, b in zip(sizes, sizes[1:]))  # more size ...
    assert all(b < a for a, b in zip(dist, dist[1:]))  # ... strictly less distortion
    key = "max_bytes" if axis == "bytes" else "max_avg_bits"
    for p in front.points[:: max(1, len(front.points) // 4)]:
        cap = p.bytes if axis == "bytes" else p.avg_bits
        best = brute_force(problem.model_copy(update={"constraints": Constraints(**{key: cap})}))
        assert p.distortion == pytest.approx(best[0], rel=1e-9, abs=1e-12)
        plan = front.plan(problem, front.points.index(p))
        assert plan.totals.distortion == pytest.approx(p.distortion) and plan.totals.bytes == p.bytes


def test_frontier_refuses_pair_terms():
    with pytest.raises(SolverNotApplicable, match="pair terms"):
        frontier(random_problem(np.random.default_rng(1), 4, pairs=1))
