"""Exact solver for very large single-budget problems: Lagrangian relaxation plus an exact core.

The LP relaxation of a multiple-choice knapsack is solved greedily over each group's lower
convex hull (all groups at once in numpy). Its multiplier ``lam`` gives the certified bound
``L = sum_g min_k (c + lam w) - lam cap`` and each option's reduced cost ``rc >= 0``. Rounding the
LP solution down gives an incumbent ``U``; any option with ``rc > U - L`` cannot be in a better
solution, so every group with a single surviving option is fixed and only the few undecided
groups form the core, which is solved exactly (Pareto DP pruned by reduced cost, or HiGHS when
that frontier grows too large). The result is proven optimal; the reported bound is ``L``, so the
gap shown is the certified gap to the LP bound.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional

import numpy as np

from mpq.errors import SolverNotApplicable

from .base import Solution, Solver, register_solver
from .compiled import Compiled
from .dp import FrontierTooLarge, pareto_dp

#: Above this many segments, the split multiplier is found by a bucketed selection instead of a sort.
_SORT_LIMIT = 200_000
_BUCKETS = 1 << 16


@dataclass
class Hulls:
    """Lower convex hull of every group's (weight, cost) points, lightest vertex first."""

    vertices: np.ndarray  # (G, K) option index of hull vertex r (only r <= n_segments[g] meaningful)
    n_segments: np.ndarray  # (G,)
    efficiency: np.ndarray  # (G, K-1) cost saved per unit of weight on segment r (decreasing in r)
    d_weight: np.ndarray  # (G, K-1) weight added by segment r


def lower_hulls(cost: np.ndarray, weight: np.ndarray) -> Hulls:
    """All hulls at once: from the lightest (then cheapest) option, repeatedly step to the option
    with the steepest cost decrease per unit weight (the farthest one on near-ties), at most K-1 steps."""
    G, K = cost.shape
    wmin = weight.min(axis=1)
    start = np.where(weight == wmin[:, None], cost, np.inf).argmin(axis=1)
    vertices = np.repeat(start[:, None], K, axis=1)
    n_seg = np.zeros(G, dtype=np.int64)
    eff = np.zeros((G, max(K - 1, 1)))
    dws = np.zeros((G, max(K - 1, 1)))
    active = np.arange(G)
    cur = start
    for r in range(K - 1):
        if active.size == 0:
            break
        rows = np.arange(active.size)
        Wa, Ca = weight[active], cost[active]
        dw = (Wa - Wa[rows, cur][:, None]).astype(np.float64)
        dc = Ca - Ca[rows, cur][:, None]
        ok = (dw > 0) & (dc < 0)
        slope = np.full(dw.shape, np.inf)
        np.divide(dc, dw, out=slope, where=ok)
        best = slope.min(axis=1)
        has = np.isfinite(best)
        near = slope <= (best * (1 - 1e-12))[:, None]
        nxt = np.where(near, dw, -1.0).argmax(axis=1)
        a, nxt, rows = active[has], nxt[has], rows[has]
        vertices[a, r + 1 :] = nxt[:, None]
        eff[a, r] = -slope[rows, nxt]
        dws[a, r] = dw[rows, nxt]
        n_seg[a] += 1
        active, cur = a, nxt
    return Hulls(vertices, n_seg, eff, dws)


def split_multiplier(eff: np.ndarray, dw: np.ndarray, slack: float) -> float:
    """The efficiency of the segment that the greedy LP splits: taking segments in decreasing
    efficiency, the first one whose cumulative weight exceeds ``slack``."""
    if eff.size <= _SORT_LIMIT:
        order = np.argsort(-eff, kind="stable")
        j = int(np.searchsorted(np.cumsum(dw[order]), slack, side="right"))
        return float(eff[order[min(j, eff.size - 1)]])
    le = np.log(eff)
    lo, hi = float(le.min()), float(le.max())
    if hi == lo:
        return float(eff[0])
    bucket = ((hi - le) * ((_BUCKETS - 1) / (hi - lo))).astype(np.int64)  # 0 holds the most efficient
    cum = np.cumsum(np.bincount(bucket, weights=dw, minlength=_BUCKETS))
    k = min(int(np.searchsorted(cum, slack, side="right")), _BUCKETS - 1)
    before = float(cum[k - 1]) if k else 0.0
    members = np.flatnonzero(bucket == k)
    members = members[np.argsort(-eff[members], kind="stable")]
    j = int(np.searchsorted(before + np.cumsum(dw[members]), slack, side="right"))
    return float(eff[members[min(j, members.size - 1)]])


def relaxation_bound(cost: np.ndarray, weight: np.ndarray, cap: float) -> float:
    """The LP (= Lagrangian) lower bound of one budget's multiple-choice knapsack."""
    hull = lower_hulls(cost, weight)
    slack = cap - float(weight.min(axis=1).sum())
    valid = np.arange(hull.efficiency.shape[1])[None, :] < hull.n_segments[:, None]
    eff, dw = hull.efficiency[valid], hull.d_weight[valid]
    lam = 0.0 if dw.sum() <= slack else split_multiplier(eff, dw, slack)
    return float((cost + lam * weight).min(axis=1).sum() - lam * cap)


@dataclass
class MCKPResult:
    choice: np.ndarray  # option index per group
    objective: float
    bound: float  # certified Lagrangian (= LP) lower bound
    optimal: bool  # proven by reduced-cost fixing and an exact core
    multiplier: float
    core_groups: int
    core_method: str  # "none", "dp" or "highs"


def solve_mckp(
    cost: np.ndarray,
    weight: np.ndarray,
    cap: float,
    n_options: Optional[np.ndarray] = None,
    *,
    max_core_states: int = 200_000,
    time_limit_s: Optional[float] = None,
) -> MCKPResult:
    """Minimize sum(cost[g, choice[g]]) subject to sum(weight[g, choice[g]]) <= cap (exactly).

    ``cost`` and ``weight`` are ``(groups, options)``; columns beyond ``n_options[g]`` repeat a
    real option. The caller has checked that the lightest choice fits.
    """
    t0 = time.perf_counter()
    G, K = cost.shape
    rows = np.arange(G)
    hull = lower_hulls(cost, weight)
    base_weight = float(weight.min(axis=1).sum())
    slack = cap - base_weight
    valid = np.arange(hull.efficiency.shape[1])[None, :] < hull.n_segments[:, None]
    seg_eff, seg_dw = hull.efficiency[valid], hull.d_weight[valid]
    if seg_dw.sum() <= slack:  # the cheapest option of every group fits: trivially optimal
        choice = hull.vertices[rows, hull.n_segments]
        value = float(cost[rows, choice].sum())
        return MCKPResult(choice, value, value, True, 0.0, 0, "none")
    lam = split_multiplier(seg_eff, seg_dw, slack)
    # incumbent: every group takes its hull segments strictly more efficient than lam (a prefix)
    taken = valid & (hull.efficiency > lam)
    steps = np.cumprod(taken, axis=1).sum(axis=1)
    choice = hull.vertices[rows, steps]
    upper = float(cost[rows, choice].sum())
    z = cost + lam * weight
    zmin = z.min(axis=1)
    bound = float(zmin.sum() - lam * cap)
    delta = upper - bound
    tol = 1e-9 * max(abs(upper), abs(bound), 1e-300) + 1e-12 * abs(lam * cap)
    rc = z - zmin[:, None]
    keep = rc <= delta + tol
    if n_options is not None:
        keep &= np.arange(K)[None, :] < n_options[:, None]
    n_keep = keep.sum(axis=1)
    core = np.flatnonzero(n_keep >= 2)
    result = MCKPResult(choice, upper, bound, False, lam, int(core.size), "none")
    if core.size == 0:
        result.optimal = True
        return result
    fixed = np.ones(G, dtype=bool)
    fixed[core] = False
    fixed_choice = np.where(keep, rc, np.inf).argmin(axis=1)  # the single survivor of fixed groups
    fixed_weight = float(weight[rows[fixed], fixed_choice[fixed]].sum())
    fixed_cost = float(cost[rows[fixed], fixed_choice[fixed]].sum())
    options = [np.flatnonzero(keep[g]) for g in core]
    costs = [cost[g, o] for g, o in zip(core, options)]
    weights = [weight[g, o] for g, o in zip(core, options)]
    try:
        front = pareto_dp(
            costs, weights, cap - fixed_weight,
            penalties=[rc[g, o] for g, o in zip(core, options)], penalty_limit=delta + tol, max_states=max_core_states,
        )
        if len(front.cost):
            best = int(np.argmin(front.cost))
            sub = front.choice(best)
            result.core_method = "dp"
            result.optimal = True
            if fixed_cost + float(front.cost[best]) < upper:
                choice = fixed_choice.copy()
                choice[core] = [o[k] for o, k in zip(options, sub)]
        else:  # numerical corner: the incumbent itself is the best the core admits
            result.core_method, result.optimal = "dp", True
    except FrontierTooLarge:
        from .ilp import highs_mckp

        left = None if time_limit_s is None else max(0.1, time_limit_s - (time.perf_counter() - t0))
        sub, proven = highs_mckp(costs, {"cap": weights}, {"cap": cap - fixed_weight}, time_limit_s=left)
        result.core_method = "highs"
        result.optimal = proven
        if sub is not None:
            cand = fixed_choice.copy()
            cand[core] = [o[k] for o, k in zip(options, sub)]
            if float(cost[rows, cand].sum()) < upper:
                choice = cand
    result.choice = choice
    result.objective = float(cost[rows, choice].sum())
    return result


@register_solver
class LagrangianSolver(Solver):
    """Exact for one budget at any scale: Lagrangian over convex hulls, then an exact core (gap to LP bound)."""

    name = "lagrangian"
    exact = True

    def __init__(self, *, time_limit_s=None, max_core_states: int = 200_000, **settings):
        super().__init__(time_limit_s=time_limit_s, **settings)
        self.max_core_states = int(max_core_states)
        self.last: Optional[MCKPResult] = None

    def _solve(self, cp: Compiled) -> Solution:
        if len(cp.caps) != 1 or cp.pairs:
            raise SolverNotApplicable(
                "lagrangian is exact for a single budget without pairwise terms; "
                f"this problem has constraints {sorted(cp.caps)} and {len(cp.pairs)} pair terms: use --solver ilp"
            )
        arrays = cp.arrays
        (name, cap), = arrays.caps.items()
        res = solve_mckp(arrays.cost, arrays.resources[name], cap, arrays.n_options,
                         max_core_states=self.max_core_states, time_limit_s=self.time_limit_s)
        self.last = res
        return Solution(res.choice, "optimal" if res.optimal else "feasible", min(res.bound, res.objective))
