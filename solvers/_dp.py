"""Exact dynamic programming for one size-like budget (bytes, bits or BitOps): the shared algorithm.

The ``dp`` and ``pareto`` solvers, the frontier and the Lagrangian core use it; none of them
imports another registered solver.

Groups are merged one at a time into a Pareto frontier of (resource, distortion) points, dropping
dominated points and points over the budget. With integer resources this is exact: no binning,
so it can neither break the budget nor miss the optimum. The final frontier is the whole
size/distortion trade-off under the budget, which ``frontier()`` returns.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from mpq.errors import SolverNotApplicable
from mpq.schema import Problem

from .compiled import Compiled


def dp_applicable(problem: Problem) -> bool:
    active = problem.constraints.active()
    return len(active) == 1 and not problem.pairs and "max_latency_ms" not in active


@dataclass
class Frontier:
    weight: np.ndarray  # resource of each non-dominated point, ascending
    cost: np.ndarray  # distortion, strictly descending
    parents: list[tuple[np.ndarray, np.ndarray]]  # per group: (index into previous frontier, option)

    def choice(self, point: int) -> np.ndarray:
        out = np.zeros(len(self.parents), dtype=np.int64)
        i = point
        for g in range(len(self.parents) - 1, -1, -1):
            prev, opt = self.parents[g]
            out[g] = opt[i]
            i = prev[i]
        return out


class FrontierTooLarge(Exception):
    """The DP frontier grew past ``max_states`` or ran past its deadline (callers fall back to another exact method)."""


def pareto_dp(
    costs: list[np.ndarray],
    weights: list[np.ndarray],
    cap: float = np.inf,
    *,
    penalties: list[np.ndarray] | None = None,
    penalty_limit: float = np.inf,
    max_states: int | None = None,
    completion=None,
    upper: float = np.inf,
    deadline: float | None = None,
) -> Frontier:
    """Exact frontier of sum(cost) against sum(weight) <= cap over one option per group.

    ``penalties`` (non-negative, e.g. Lagrangian reduced costs) prune every partial state whose
    summed penalty exceeds ``penalty_limit``: such a state cannot lead to a better solution.
    ``completion(g, weight)`` (a lower bound on the cost of groups after ``g`` given the weight
    used so far, e.g. their LP relaxation) prunes every state that cannot end below ``upper``.
    ``max_states`` and ``deadline`` (a ``time.perf_counter()`` value) raise :class:`FrontierTooLarge`
    instead of letting a core DP run away.

    Candidates are laid out option-major, so they form one ascending run per option and the
    stable sort by weight is a cheap merge; parents are recovered from the survivors' positions.
    This loop runs once per group, so it keeps numpy calls few (the service solves in ms).
    """
    W = np.zeros(1, dtype=np.result_type(*[w.dtype for w in weights]) if weights else np.int64)
    C = np.zeros(1)
    P = np.zeros(1)
    parents = []
    mins = np.array([w.min() for w in weights], dtype=W.dtype)
    remaining_min = np.concatenate([np.cumsum(mins[::-1])[::-1][1:], [0]]) if len(mins) else mins
    slack = cap * (1 + 1e-12) if np.issubdtype(W.dtype, np.floating) else cap
    for g, (c, w) in enumerate(zip(costs, weights)):
        n = len(W)
        cw = np.add.outer(w, W).ravel()  # option-major: candidate j * n + i is state i plus option j
        cc = np.add.outer(c, C).ravel()
        keep = cw <= slack - remaining_min[g]
        if penalties is not None:
            cp = np.add.outer(penalties[g], P).ravel()
            keep &= cp <= penalty_limit
        idx = keep.nonzero()[0]
        cw, cc = cw[idx], cc[idx]
        if completion is not None:
            ok = (cc + completion(g, cw) <= upper).nonzero()[0]
            idx, cw, cc = idx[ok], cw[ok], cc[ok]
        order = np.argsort(cw, kind="stable")  # merges the per-option runs
        cw, cc, idx = cw[order], cc[order], idx[order]
        nd = np.empty(len(cc), dtype=bool)
        if len(cc):
            nd[0] = True
            np.less(cc[1:], np.minimum.accumulate(cc)[:-1], out=nd[1:])
        W, C, idx = cw[nd], cc[nd], idx[nd]
        if len(W) > 1:  # equal weights: the last kept one is the cheapest, so the frontier stays strict
            last = W[:-1] != W[1:]
            if not last.all():
                last = np.append(last, True)
                W, C, idx = W[last], C[last], idx[last]
        if penalties is not None:
            P = cp[idx]
        parents.append((idx % n, idx // n))
        if max_states is not None and len(W) > max_states:
            raise FrontierTooLarge(f"the frontier has {len(W)} points after {g + 1} of {len(costs)} groups")
        if deadline is not None and time.perf_counter() > deadline:
            raise FrontierTooLarge(f"out of time after {g + 1} of {len(costs)} groups ({len(W)} points)")
    return Frontier(W, C, parents)


def budget_frontier(cp: Compiled, what: str, deadline: float | None = None) -> Frontier:
    """The exact frontier under the problem's one size-like budget; ``what`` starts the refusal for other problems."""
    if len(cp.caps) != 1 or cp.pairs or "max_latency_ms" in cp.caps:
        raise SolverNotApplicable(
            f"{what} a single size-like budget (bytes, avg_bits or bitops) without pairwise terms; "
            f"this problem has constraints {sorted(cp.caps)} and {len(cp.pairs)} pair terms: use --solver ilp"
        )
    (name, cap), = cp.caps.items()
    return pareto_dp(cp.cost, [np.asarray(r, dtype=np.int64) for r in cp.resources[name]], cap, deadline=deadline)
