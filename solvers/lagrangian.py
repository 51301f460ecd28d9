"""Exact solver for very large single-budget problems: Lagrangian relaxation plus an exact core.

The LP relaxation of a multiple-choice knapsack is solved greedily over each group's lower
convex hull (all groups at once in numpy). Its multiplier ``lam`` gives the certified bound
``L = sum_g min_k (c + lam w) - lam cap`` and each option's reduced cost ``rc >= 0``. Rounding the
LP solution down gives an incumbent ``U``; any option with ``rc > U - L`` cannot be in a better
solution, so every group with a single surviving option is fixed and only the few undecided
groups form the core, which is solved exactly (a Pareto DP over the core groups merged two by two,
pruned by the LP bound of the groups still to come, or HiGHS when that frontier grows too large). When every undecided group fits the exact core the result is
proven optimal (gap 0); otherwise the status is ``feasible`` and the bound is ``L``, so the gap
shown is the certified gap to the LP bound.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional

import numpy as np

from pydantic import Field

from mpq.errors import SolverNotApplicable
from mpq.settings import Count

from .base import Solution, Solver, register_solver
from .compiled import Compiled
from .dp import FrontierTooLarge, pareto_dp

#: Above this many segments, the split multiplier is found by a bucketed selection instead of a sort.
_SORT_LIMIT = 200_000
_BUCKETS = 1 << 16
#: Above this many (suffix, segment) entries, the core DP's completion tables are built one at a time.
_TABLE_LIMIT = 1 << 20
#: Above this many option combinations, the core's groups are not merged two by two.
_PAIR_LIMIT = 1 << 20


def row_min(a: np.ndarray) -> np.ndarray:
    """``a.min(axis=1)`` for few columns, column by column (numpy's short-row reduction is slow)."""
    out = a[:, 0].copy()
    for j in range(1, a.shape[1]):
        np.minimum(out, a[:, j], out=out)
    return out


def row_count(mask: np.ndarray) -> np.ndarray:
    out = mask[:, 0].astype(np.int64)
    for j in range(1, mask.shape[1]):
        out += mask[:, j]
    return out


def leading_true(mask: np.ndarray) -> np.ndarray:
    """Number of leading True values in each row."""
    run = mask[:, 0].copy()
    out = run.astype(np.int64)
    for j in range(1, mask.shape[1]):
        run &= mask[:, j]
        out += run
    return out


@dataclass
class Hulls:
    """Lower convex hull of every group's (weight, cost) points, lightest vertex first."""

    vertices: np.ndarray  # (G, K) option index of hull vertex r (only r <= n_segments[g] meaningful)
    n_segments: np.ndarray  # (G,)
    efficiency: np.ndarray  # (G, K-1) cost saved per unit of weight on segment r (decreasing in r)
    d_weight: np.ndarray  # (G, K-1) weight added by segment r


def lower_hulls(cost: np.ndarray, weight: np.ndarray) -> Hulls:
    """All hulls at once, by pairwise tests over the (few) options of every group.

    Options are taken in order of weight (rows already sorted, the usual case, are not re-sorted).
    A point survives when every lighter point costs more (and no equally heavy one costs less),
    and is a hull vertex when the flattest chord from a lighter survivor is steeper than the
    steepest chord to a heavier one. Columns are contiguous vectors over groups.
    """
    G, K = cost.shape
    order = None
    if K > 1 and not all((weight[:, j + 1] >= weight[:, j]).all() for j in range(K - 1)):
        order = np.argsort(weight, axis=1, kind="stable")
        cost_s, weight_s = np.take_along_axis(cost, order, 1), np.take_along_axis(weight, order, 1)
    else:
        cost_s, weight_s = cost, weight
    c = [np.ascontiguousarray(cost_s[:, j], dtype=np.float64) for j in range(K)]
    w = [np.ascontiguousarray(weight_s[:, j], dtype=np.float64) for j in range(K)]
    ties = any((weight_s[:, j + 1] == weight_s[:, j]).any() for j in range(K - 1))
    cs = []
    best = np.full(G, np.inf)
    for j in range(K):
        alive = c[j] < best
        if ties:
            for k in range(j + 1, K):
                alive &= ~((w[k] == w[j]) & (c[k] < c[j]))
        np.minimum(best, c[j], out=best)
        cs.append(np.where(alive, c[j], np.inf))  # a dead point never bounds a chord
    left = [np.full(G, -np.inf) for _ in range(K)]  # flattest chord from a lighter survivor
    right = [np.full(G, np.inf) for _ in range(K)]  # steepest chord to a heavier survivor
    num, den = np.empty(G), np.empty(G)
    with np.errstate(divide="ignore", invalid="ignore"):
        for j in range(K):
            for i in range(j):
                np.subtract(cs[j], cs[i], out=num)
                np.subtract(w[j], w[i], out=den)
                np.divide(num, den, out=num)
                np.maximum(left[j], num, out=left[j])
                np.minimum(right[i], num, out=right[i])
    hull = [np.isfinite(cs[j]) & (left[j] < right[j]) for j in range(K)]
    n_vert = np.sum(hull, axis=0)
    vertices = np.zeros((G, K), dtype=np.int64)
    rank = np.zeros(G, dtype=np.int64)
    for j in range(K):
        g = np.flatnonzero(hull[j])
        vertices[g, rank[g]] = j
        rank += hull[j]
    last = np.take_along_axis(vertices, (n_vert - 1)[:, None], axis=1)
    vertices = np.where(np.arange(K)[None, :] >= n_vert[:, None], last, vertices)
    n_seg = n_vert - 1
    eff = np.zeros((G, max(K - 1, 1)))
    dws = np.zeros((G, max(K - 1, 1)))
    rows = np.arange(G)
    with np.errstate(divide="ignore", invalid="ignore"):
        for r in range(K - 1):
            has = r < n_seg
            a, b = vertices[:, r], vertices[:, r + 1]
            dw = weight_s[rows, b].astype(np.float64) - weight_s[rows, a]
            dws[:, r] = np.where(has, dw, 0.0)
            eff[:, r] = np.where(has, (cost_s[rows, a] - cost_s[rows, b]) / dw, 0.0)
    if order is not None:
        vertices = np.take_along_axis(order, vertices, 1)
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
    slack = cap - float(row_min(weight).sum())
    valid = np.arange(hull.efficiency.shape[1])[None, :] < hull.n_segments[:, None]
    eff, dw = hull.efficiency[valid], hull.d_weight[valid]
    lam = 0.0 if dw.sum() <= slack else split_multiplier(eff, dw, slack)
    return float(row_min(cost + lam * weight).sum() - lam * cap)


def fill(cost: np.ndarray, weight: np.ndarray, hull: Hulls, steps: np.ndarray, cap: float, rounds: int = 4) -> np.ndarray:
    """Spend the weight the rounded LP solution leaves unused on the next hull segments that fit,
    most efficient first."""
    rows = np.arange(cost.shape[0])
    steps = steps.copy()
    choice = hull.vertices[rows, steps]
    for _ in range(rounds):
        left = cap - float(weight[rows, choice].sum())
        g = np.flatnonzero(steps < hull.n_segments)
        dw = hull.d_weight[g, steps[g]]
        ok = dw <= left
        g, dw = g[ok], dw[ok]
        if not g.size:
            break
        e = hull.efficiency[g, steps[g]]
        if e.size > 4096:  # only the most efficient few can matter: the leftover is small
            top = np.argpartition(-e, 4095)[:4096]
            g, dw, e = g[top], dw[top], e[top]
        order = np.argsort(-e, kind="stable")
        take = g[order[np.cumsum(dw[order]) <= left]]
        steps[take] += 1
        choice[take] = hull.vertices[take, steps[take]]
    return choice


class SuffixLP:
    """LP relaxation of the groups after ``g`` as a function of the weight already used: the
    completion bound that lets the core DP drop every state that cannot beat the incumbent."""

    def __init__(self, costs: list[np.ndarray], weights: list[np.ndarray], cap: float):
        n = len(costs)
        K = max(len(c) for c in costs)
        idx = [np.minimum(np.arange(K), len(c) - 1) for c in costs]
        C = np.array([c[i] for c, i in zip(costs, idx)], dtype=np.float64)
        W = np.array([w[i] for w, i in zip(weights, idx)], dtype=np.float64)
        hull = lower_hulls(C, W)
        rows = np.arange(n)
        start = hull.vertices[:, 0]
        base_c, base_w = C[rows, start], W[rows, start]
        self.cap = cap
        self.base_cost = np.append(np.cumsum(base_c[::-1])[::-1], 0.0)  # groups g.. (index g), n -> 0
        self.base_weight = np.append(np.cumsum(base_w[::-1])[::-1], 0.0)
        # every hull segment once, most efficient first; the table of suffix g sums the segments of
        # groups >= g in that order (a segment of an earlier group adds nothing: a flat step of the
        # table, which np.interp never lands inside)
        valid = np.arange(hull.efficiency.shape[1])[None, :] < hull.n_segments[:, None]
        group = np.broadcast_to(rows[:, None], valid.shape)[valid]
        eff, dw = hull.efficiency[valid], hull.d_weight[valid]
        order = np.argsort(-eff, kind="stable")
        group, eff, dw = group[order], eff[order], dw[order]
        self.group, self.dw, self.gain = group, dw, eff * dw
        self.rows: Optional[tuple[np.ndarray, np.ndarray]] = None
        if (n + 1) * (eff.size + 1) <= _TABLE_LIMIT:  # every table at once (the usual, small core)
            self.rows = self._tables(np.arange(n + 1))

    def _tables(self, suffixes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        inside = self.group[None, :] >= suffixes[:, None]  # (suffix, segment)
        cum_w = np.zeros((len(suffixes), self.dw.size + 1))
        cum_gain = np.zeros_like(cum_w)
        np.cumsum(inside * self.dw, axis=1, out=cum_w[:, 1:])
        np.cumsum(inside * self.gain, axis=1, out=cum_gain[:, 1:])
        return cum_w, cum_gain

    def __call__(self, g: int, used: np.ndarray) -> np.ndarray:
        """Lower bound on the cost of groups ``g+1..`` when ``used`` weight is already taken."""
        if self.rows is not None:
            cum_w, cum_gain = self.rows[0][g + 1], self.rows[1][g + 1]
        else:
            (cum_w,), (cum_gain,) = self._tables(np.array([g + 1]))
        room = self.cap - used - self.base_weight[g + 1]
        gain = np.interp(room, cum_w, cum_gain)  # fractional last segment; flat beyond the end
        return np.where(room < -1e-9 * max(abs(self.cap), 1.0), np.inf, self.base_cost[g + 1] - gain)


def pair_groups(cost: np.ndarray, weight: np.ndarray, rc: np.ndarray, allowed: np.ndarray, limit: float):
    """Merge consecutive rows two by two (every pair of their ``allowed`` options), for a DP with half the steps.

    ``cost``, ``weight``, ``rc`` and ``allowed`` are ``(groups, options)``. A combination whose
    reduced costs sum past ``limit`` (= U - L) cannot be in a better solution and is left out, and
    so is one that is no lighter than a cheaper combination of the same pair. All pairs are merged
    at once (rows are left unmerged when that would take more than ``_PAIR_LIMIT`` combinations).
    Returns the merged costs and weights (one array per merged group), and a function
    mapping a merged choice back to one option (column) per original row.
    """
    n, K = cost.shape
    if n // 2 * K * K > _PAIR_LIMIT:  # too many combinations to hold at once: every row alone
        options = [a.nonzero()[0] for a in allowed]
        return ([c[o] for c, o in zip(cost, options)], [w[o] for w, o in zip(weight, options)],
                lambda merged: np.array([o[k] for o, k in zip(options, merged)], dtype=np.int64))
    m = n // 2
    first, second = slice(0, 2 * m, 2), slice(1, 2 * m, 2)

    def outer(a: np.ndarray, op=np.add) -> np.ndarray:
        return op(a[first][:, :, None], a[second][:, None, :]).reshape(m, K * K)

    c, w = outer(cost), outer(weight)
    ok = outer(allowed, np.logical_and) & (outer(rc) <= limit)
    order = np.lexsort((c, w, ~ok), axis=-1)  # per pair: allowed first, by weight, then by cost
    c, w, ok = (np.take_along_axis(x, order, 1) for x in (c, w, ok))
    c_ok = np.where(ok, c, np.inf)
    front = ok.copy()
    front[:, 1:] &= c_ok[:, 1:] < np.minimum.accumulate(c_ok, axis=1)[:, :-1]
    ends = np.cumsum(front.sum(1)).tolist()
    spans = list(zip([0, *ends[:-1]], ends))
    flat_c, flat_w, flat_o = c[front], w[front], order[front]
    p_costs = [flat_c[s:e] for s, e in spans]
    p_weights = [flat_w[s:e] for s, e in spans]
    picks = [flat_o[s:e] for s, e in spans]
    if n % 2:
        last = allowed[-1].nonzero()[0]
        p_costs.append(cost[-1, last])
        p_weights.append(weight[-1, last])

    def split(merged: np.ndarray) -> np.ndarray:
        out = np.empty(n, dtype=np.int64)
        combo = np.array([p[k] for p, k in zip(picks, merged[:m])], dtype=np.int64)
        out[first], out[second] = np.divmod(combo, K) if m else (combo, combo)
        if n % 2:
            out[-1] = last[merged[-1]]
        return out

    return p_costs, p_weights, split


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
    prove: bool = True,
    max_proof_groups: int = 400,
    max_dp_groups: int = 3000,
    core_groups: int = 64,
    max_core_states: int = 50_000,
    time_limit_s: Optional[float] = None,
) -> MCKPResult:
    """Minimize sum(cost[g, choice[g]]) subject to sum(weight[g, choice[g]]) <= cap.

    ``cost`` and ``weight`` are ``(groups, options)``; columns beyond ``n_options[g]`` repeat a
    real option. The caller has checked that the lightest choice fits. The result is proven
    optimal when every group left undecided by reduced-cost fixing fits an exact core: a DP
    (up to ``max_proof_groups`` undecided groups, or ``max_dp_groups`` with ``prove``) or, with
    ``prove``, HiGHS within the time limit (30 s by default). Otherwise the ``core_groups`` most
    undecided groups are re-solved exactly around the incumbent and the certified gap to the LP
    bound is reported.
    """
    t0 = time.perf_counter()
    G, K = cost.shape
    rows = np.arange(G)
    hull = lower_hulls(cost, weight)
    base_weight = float(row_min(weight).sum())
    slack = cap - base_weight
    valid = np.arange(hull.efficiency.shape[1])[None, :] < hull.n_segments[:, None]
    seg_eff, seg_dw = hull.efficiency[valid], hull.d_weight[valid]
    if seg_dw.sum() <= slack:  # the cheapest option of every group fits: trivially optimal
        choice = hull.vertices[rows, hull.n_segments]
        value = float(cost[rows, choice].sum())
        return MCKPResult(choice, value, value, True, 0.0, 0, "none")
    lam = split_multiplier(seg_eff, seg_dw, slack)
    # incumbent: every group takes its hull segments strictly more efficient than lam (a prefix),
    # then the weight left over is spent greedily
    taken = valid & (hull.efficiency > lam)
    steps = leading_true(taken)
    choice = fill(cost, weight, hull, steps, cap)
    upper = float(cost[rows, choice].sum())
    z = cost + lam * weight
    zmin = row_min(z)
    bound = float(zmin.sum() - lam * cap)
    delta = upper - bound
    tol = 1e-9 * max(abs(upper), abs(bound), 1e-300) + 1e-12 * abs(lam * cap)
    rc = z - zmin[:, None]
    keep = rc <= delta + tol
    if n_options is not None:
        keep &= np.arange(K)[None, :] < n_options[:, None]
    keep[rows, choice] = True
    undecided = np.flatnonzero(row_count(keep) >= 2)
    result = MCKPResult(choice, upper, bound, undecided.size == 0, lam, int(undecided.size), "none")
    if undecided.size == 0:
        return result

    def core_solve(core: np.ndarray, exact_fallback: bool) -> tuple[Optional[np.ndarray], bool, str]:
        """Best choice with groups outside ``core`` at the incumbent; (choice, proven, method)."""
        # groups with few options first: the frontier grows later, so fewer states are carried
        core = core[np.argsort(row_count(keep[core]), kind="stable")]
        fixed = np.ones(G, dtype=bool)
        fixed[core] = False
        fixed_weight = float(weight[rows[fixed], choice[fixed]].sum())
        core_cap = cap - fixed_weight
        core_upper = float(cost[core, choice[core]].sum()) + tol
        try:
            if core.size > max_dp_groups:
                raise FrontierTooLarge(f"{core.size} undecided groups")
            # no reduced-cost pruning here: a state whose reduced costs exceed U - L also has
            # cost + LP completion above the incumbent, so the completion bound already drops it
            # merged two by two: half the DP steps (merging more levels makes each step too large)
            p_costs, p_weights, split = pair_groups(cost[core], weight[core], rc[core], keep[core], delta + tol)
            front = pareto_dp(p_costs, p_weights, core_cap, max_states=max_core_states,
                              completion=SuffixLP(p_costs, p_weights, core_cap), upper=core_upper)
            if not len(front.cost):
                return None, True, "dp"
            picked, proven, method = split(front.choice(int(np.argmin(front.cost)))), True, "dp"
        except FrontierTooLarge:
            if not exact_fallback:
                return None, False, "dp"
            from .ilp import highs_mckp

            options = [keep[g].nonzero()[0] for g in core]
            costs = [cost[g, o] for g, o in zip(core, options)]
            weights = [weight[g, o] for g, o in zip(core, options)]
            limit = 30.0 if time_limit_s is None else time_limit_s
            left = max(0.1, limit - (time.perf_counter() - t0))
            sub, proven = highs_mckp(costs, {"cap": weights}, {"cap": cap - fixed_weight}, time_limit_s=left)
            method = "highs"
            if sub is None:
                return None, False, method
            picked = [o[k] for o, k in zip(options, sub)]
        cand = choice.copy()
        cand[core] = picked
        return cand, proven, method

    if undecided.size <= max_proof_groups or prove:
        cand, proven, method = core_solve(undecided, exact_fallback=prove)
        result.core_method = method
        if proven:
            result.optimal = True
            if cand is not None and float(cost[rows, cand].sum()) < upper:
                choice = cand
    if not result.optimal:
        # re-solve the most undecided groups exactly (smallest reduced cost of an alternative)
        second = np.where(keep[undecided], rc[undecided], np.inf)
        second[np.arange(undecided.size), choice[undecided]] = np.inf
        closest = row_min(second)
        if closest.size > core_groups:
            closest_idx = np.argpartition(closest, core_groups - 1)[:core_groups]
        else:
            closest_idx = np.arange(closest.size)
        core = undecided[closest_idx]
        cand, _, method = core_solve(core, exact_fallback=False)
        result.core_method = method
        if cand is not None and float(cost[rows, cand].sum()) < upper:
            choice = cand
    result.choice = choice
    result.objective = float(cost[rows, choice].sum())
    return result


@register_solver
class LagrangianSolver(Solver):
    """One budget at any scale: Lagrangian over convex hulls, exact core; proven optimal or certified gap to the LP bound.

    ``prove=True`` solves every group left undecided by reduced-cost fixing exactly (HiGHS when the
    DP frontier grows too large), so the status is always ``optimal`` (slower at 10,000+ groups).
    """

    name = "lagrangian"
    exact = True

    class Settings(Solver.Settings):
        prove: bool = Field(False, description="solve the undecided core exactly, so the status is always optimal")
        core_groups: Count = Field(64, description="groups left undecided around the multiplier that the exact core solves")

    last: Optional[MCKPResult] = None  # the last solve's multiplier, bound and core (set by _solve)

    def _solve(self, cp: Compiled) -> Solution:
        if len(cp.caps) != 1 or cp.pairs:
            raise SolverNotApplicable(
                "lagrangian is exact for a single budget without pairwise terms; "
                f"this problem has constraints {sorted(cp.caps)} and {len(cp.pairs)} pair terms: use --solver ilp"
            )
        arrays = cp.arrays
        (name, cap), = arrays.caps.items()
        res = solve_mckp(arrays.cost, arrays.resources[name], cap, arrays.n_options,
                         prove=self.prove, core_groups=self.core_groups, time_limit_s=self.time_limit_s)
        self.last = res
        if res.optimal:  # proven: the optimality gap is zero (the LP bound stays in self.last.bound)
            return Solution(res.choice, "optimal", None)
        return Solution(res.choice, "feasible", min(res.bound, res.objective))
