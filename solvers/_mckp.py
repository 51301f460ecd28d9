"""A multiple-choice knapsack solved exactly at any scale: Lagrangian relaxation plus an exact core.

The algorithm of the ``lagrangian`` solver (:mod:`mpq.solvers.lagrangian`); ``greedy`` takes its LP bound
(:func:`relaxation_bound`) from here.

The LP relaxation of a multiple-choice knapsack is solved greedily over each group's lower
convex hull (all groups at once in numpy). Its multiplier ``lam`` gives the certified bound
``L = sum_g min_k (c + lam w) - lam cap`` and each option's reduced cost ``rc >= 0``; rounding the
LP solution gives an incumbent ``U``. A solution of value ``<= L + delta`` uses only options with
``rc <= delta``, so for a small ``delta`` nearly every group keeps a single option and the few
undecided ones form a core that a Pareto DP (groups merged two by two, pruned by the LP of the
groups still to come) solves exactly. ``delta`` grows until the core holds a solution: that one is
proven optimal, typically with a few hundred undecided groups even at a million groups. When the
core grows too large, HiGHS solves it (``prove``) or the status is ``feasible`` with a certified
bound: ``L``, raised to ``L + delta`` for every ``delta`` the DP showed empty.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional

import numpy as np

from ._dp import FrontierTooLarge, pareto_dp

#: Above this many segments, the split multiplier is found by a bucketed selection instead of a sort.
_SORT_LIMIT = 200_000
_BUCKETS = 1 << 16
#: Above this many (suffix, segment) entries, the core DP's completion tables are built one at a time.
_TABLE_LIMIT = 1 << 20
#: Above this many option combinations, the core's groups are not merged two by two.
_PAIR_LIMIT = 1 << 20
#: Up to this many groups (and this many (group, option, option) chords), hulls are found by
#: whole-array operations (:func:`small_hulls`): a few dozen numpy calls instead of a few per pair of
#: options, faster while calls cost more than the arithmetic (measured: up to ~500 groups of 6 options).
_SMALL_HULL_GROUPS = 400
_CHORD_LIMIT = 1 << 18


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
    if G <= _SMALL_HULL_GROUPS and G * K * K <= _CHORD_LIMIT:
        return small_hulls(cost_s, weight_s, order)
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


def small_hulls(cost_s: np.ndarray, weight_s: np.ndarray, order: Optional[np.ndarray]) -> Hulls:
    """:func:`lower_hulls` of rows already sorted by weight, every chord at once: the same tests and
    the same arithmetic as the column loop, in a few dozen numpy calls instead of a few per option
    pair (the core's merged pairs have dozens of options). Arrays are (option, group), so every
    reduction runs over contiguous group vectors."""
    G, K = cost_s.shape
    c, w = np.ascontiguousarray(cost_s.T, dtype=np.float64), np.ascontiguousarray(weight_s.T, dtype=np.float64)
    lighter = (np.arange(K)[:, None] < np.arange(K)[None, :])[:, :, None]  # [i, j]: i before j
    before = np.full((K, G), np.inf)
    if K > 1:
        np.minimum.accumulate(c[:-1], axis=0, out=before[1:])
    alive = c < before  # every lighter point costs more
    if K > 1 and (w[1:] == w[:-1]).any():  # and no equally heavy one costs less
        alive &= ~((w[None, :, :] == w[:, None, :]) & (c[None, :, :] < c[:, None, :]) & lighter).any(axis=1)
    cs = np.where(alive, c, np.inf)  # a dead point never bounds a chord
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = (cs[None, :, :] - cs[:, None, :]) / (w[None, :, :] - w[:, None, :])  # [i, j, g]: chord i -> j
    left = np.where(lighter, slope, -np.inf).max(axis=0)  # flattest chord from a lighter survivor
    right = np.where(lighter, slope, np.inf).min(axis=1)  # steepest chord to a heavier survivor
    hull = np.isfinite(cs) & (left < right)
    n_vert = hull.sum(axis=0)
    packed = np.zeros((K, G), dtype=np.int64)
    j, g = hull.nonzero()
    packed[(np.cumsum(hull, axis=0) - 1)[j, g], g] = j
    groups = np.arange(G)
    last = packed[n_vert - 1, groups]
    vertices = np.where(np.arange(K)[:, None] >= n_vert[None, :], last[None, :], packed)
    n_seg = n_vert - 1
    eff = np.zeros((max(K - 1, 1), G))
    dws = np.zeros((max(K - 1, 1), G))
    if K > 1:
        a, b = vertices[:-1], vertices[1:]
        has = np.arange(K - 1)[:, None] < n_seg[None, :]
        wt, ct = weight_s.T, cost_s.T
        with np.errstate(divide="ignore", invalid="ignore"):
            dw = wt[b, groups].astype(np.float64) - wt[a, groups]
            dws[:] = np.where(has, dw, 0.0)
            eff[:] = np.where(has, (ct[a, groups] - ct[b, groups]) / dw, 0.0)
    vertices = vertices.T
    if order is not None:
        vertices = np.take_along_axis(order, vertices, 1)
    return Hulls(np.ascontiguousarray(vertices), n_seg, np.ascontiguousarray(eff.T), np.ascontiguousarray(dws.T))


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
    bound: float  # certified lower bound on the optimum (the LP bound, or better when a core proved more)
    optimal: bool  # proven: an exact core found the best solution among all within the reduced-cost threshold
    multiplier: float
    core_groups: int  # undecided groups of the last core solved
    core_method: str  # "none", "dp" or "highs"
    lp_bound: float = float("nan")  # the Lagrangian (= LP) bound L


@dataclass
class Relaxation:
    """The LP relaxation of one multiple-choice knapsack and what it gives: the bound ``L``, the
    multiplier ``lam``, every option's reduced cost, and a rounded (greedy-filled) incumbent."""

    lam: float
    bound: float
    rc: np.ndarray  # (G, K) reduced cost, +inf on padded columns
    best: np.ndarray  # (G,) an option of reduced cost 0
    alt: np.ndarray  # (G,) the smallest reduced cost of any other option (+inf: the group is decided)
    incumbent: np.ndarray  # (G,) the rounded LP solution, filled greedily
    trivial: bool  # the cheapest option of every group fits: the incumbent is optimal


def relax(cost: np.ndarray, weight: np.ndarray, cap: float, n_options: Optional[np.ndarray] = None) -> Relaxation:
    G, K = cost.shape
    rows = np.arange(G)
    hull = lower_hulls(cost, weight)
    slack = cap - float(row_min(weight).sum())
    valid = np.arange(hull.efficiency.shape[1])[None, :] < hull.n_segments[:, None]
    seg_eff, seg_dw = hull.efficiency[valid], hull.d_weight[valid]
    if seg_dw.sum() <= slack:
        choice = hull.vertices[rows, hull.n_segments]
        value = float(cost[rows, choice].sum())
        inf = np.full(G, np.inf)
        return Relaxation(0.0, value, np.zeros_like(cost), choice, inf, choice, True)
    lam = split_multiplier(seg_eff, seg_dw, slack)
    # incumbent: every group takes its hull segments strictly more efficient than lam (a prefix),
    # then the weight left over is spent greedily
    steps = leading_true(valid & (hull.efficiency > lam))
    incumbent = fill(cost, weight, hull, steps, cap)
    z = cost + lam * weight
    zmin = row_min(z)
    rc = z - zmin[:, None]
    if n_options is not None:
        rc[np.arange(K)[None, :] >= n_options[:, None]] = np.inf  # padding repeats a real option
    best = np.argmin(rc, axis=1)
    other = rc.copy()
    other[rows, best] = np.inf
    return Relaxation(lam, float(zmin.sum() - lam * cap), rc, best, row_min(other), incumbent, False)


def solve_mckp(
    cost: np.ndarray,
    weight: np.ndarray,
    cap: float,
    n_options: Optional[np.ndarray] = None,
    *,
    prove: bool = True,
    first_core: int = 256,
    growth: float = 1.5,
    max_core_groups: int = 50_000,
    max_core_states: int = 200_000,
    core_groups: int = 1024,
    time_limit_s: Optional[float] = None,
) -> MCKPResult:
    """Minimize sum(cost[g, choice[g]]) subject to sum(weight[g, choice[g]]) <= cap.

    ``cost`` and ``weight`` are ``(groups, options)``; columns beyond ``n_options[g]`` repeat a
    real option. The caller has checked that the lightest choice fits.

    Proof by a growing threshold: any solution of value ``<= L + delta`` uses only options of
    reduced cost ``<= delta``, so with every other option removed, most groups keep one option and
    an exact DP over the rest (``undecided`` groups, bounded by the LP of the groups still to come
    and by ``L + delta``) either finds the best such solution (proven optimal) or shows there is
    none (the bound rises to ``L + delta``). ``delta`` starts where ``first_core`` groups (a quarter
    of a small problem's, at least 64) are undecided and grows by ``growth`` in undecided groups up
    to the incumbent's gap. When the core is
    too large (``max_core_groups``, ``max_core_states`` or the time limit), the incumbent is improved
    on the ``core_groups`` groups closest to changing, and with ``prove`` HiGHS solves the core left
    undecided by the incumbent's gap (its dual bound plus the fixed groups is a certified bound).
    """
    t0 = time.perf_counter()
    deadline = None if time_limit_s is None else t0 + time_limit_s
    G, K = cost.shape
    rows = np.arange(G)
    r = relax(cost, weight, cap, n_options)
    choice = r.incumbent
    upper = float(cost[rows, choice].sum())
    if r.trivial:
        return MCKPResult(choice, upper, upper, True, 0.0, 0, "none", upper)
    L, rc = r.bound, r.rc
    tol = 1e-12 * (abs(L) + abs(r.lam * cap)) + 1e-300
    result = MCKPResult(choice, upper, L, False, r.lam, 0, "none", L)

    def core_dp(core: np.ndarray, delta: float, base: np.ndarray, limit: float) -> Optional[np.ndarray]:
        """The best choice of value <= ``limit`` with groups outside ``core`` at ``base`` and every
        option of reduced cost above ``delta`` left out; None when there is none."""
        keep = rc[core] <= delta + tol
        core = core[np.argsort(row_count(keep), kind="stable")]  # few options first: smaller frontiers
        keep = rc[core] <= delta + tol
        outside_w = float(weight[rows, base].sum()) - float(weight[core, base[core]].sum())
        outside_c = float(cost[rows, base].sum()) - float(cost[core, base[core]].sum())
        core_cap = cap - outside_w
        if core_cap < -1e-9 * abs(cap):
            return None
        p_costs, p_weights, split = pair_groups(cost[core], weight[core], rc[core], keep, delta + tol)
        front = pareto_dp(p_costs, p_weights, core_cap, max_states=max_core_states, deadline=deadline,
                          completion=SuffixLP(p_costs, p_weights, core_cap), upper=limit - outside_c)
        if not len(front.cost):
            return None
        cand = base.copy()
        cand[core] = split(front.choice(int(np.argmin(front.cost))))
        return cand

    gap = upper - L
    if gap <= tol:
        result.optimal, result.bound = True, upper
        return result
    alt = np.sort(r.alt[r.alt <= gap + tol])
    count = min(first_core, max(64, G // 4), alt.size)  # a small problem starts smaller: its rounds are cheap
    proven = False
    while not proven:
        delta = gap if count >= alt.size else min(gap, float(alt[count - 1]))
        undecided = np.flatnonzero(r.alt <= delta + tol)
        result.core_groups, result.core_method = int(undecided.size), "dp"
        if undecided.size > max_core_groups:
            break
        try:
            cand = core_dp(undecided, delta, r.best, L + delta + tol)
        except FrontierTooLarge:
            break
        if cand is not None:
            value = float(cost[rows, cand].sum())
            if value < upper:
                choice, upper = cand, value
            proven = True
        elif delta >= gap:
            proven = True  # nothing below the incumbent: it is optimal
        else:
            result.bound = L + delta  # no solution of value <= L + delta exists
            count = int(count * growth) + 1
    if proven:
        result.choice, result.objective, result.optimal, result.bound = choice, upper, True, upper
        return result
    # the core was too large to prove: improve the incumbent on the groups closest to changing
    for k in (64, 256, core_groups):
        other = rc.copy()
        other[rows, choice] = np.inf
        closest = row_min(other)
        k = min(k, G)
        core = np.argpartition(closest, k - 1)[:k] if k < G else rows
        try:
            cand = core_dp(core, upper - L, choice, upper)
        except FrontierTooLarge:
            break
        if cand is not None and float(cost[rows, cand].sum()) < upper:
            choice, upper = cand, float(cost[rows, cand].sum())
    gap = upper - L
    if prove and gap > tol:
        from ._milp import build_milp, choice_from_x, highs_solve, one_hot

        core = np.flatnonzero(r.alt <= gap + tol)
        options = [np.flatnonzero(rc[g] <= gap + tol) for g in core]
        outside = np.ones(G, dtype=bool)
        outside[core] = False
        out_c, out_w = float(cost[outside, r.best[outside]].sum()), float(weight[outside, r.best[outside]].sum())
        costs = [cost[g, o] for g, o in zip(core, options)]
        scale = max(abs(r.bound), 1e-300) / 1e4  # HiGHS's absolute tolerances: the optimum near 1e4 (_milp.build_milp)
        m = build_milp(costs, {"cap": [weight[g, o] for g, o in zip(core, options)]}, {"cap": cap - out_w}, objective_scale=scale)
        start_ok = outside.sum() == 0 or bool((choice[outside] == r.best[outside]).all())
        start = None
        if start_ok:
            start = one_hot(m, np.array([int(np.flatnonzero(o == choice[g])[0]) for g, o in zip(core, options)]))
        limit = 30.0 if time_limit_s is None else max(0.1, time_limit_s - (time.perf_counter() - t0))
        res = highs_solve(m, time_limit_s=limit, start=start)
        result.core_groups, result.core_method = int(core.size), "highs"
        if res.x is not None:
            sub = choice_from_x(m, res.x)
            cand = r.best.copy()
            cand[core] = [o[k] for o, k in zip(options, sub)]
            value = float(cost[rows, cand].sum())
            if value < upper and float(weight[rows, cand].sum()) <= cap:
                choice, upper = cand, value
        if res.bound is not None:  # every solution better than the incumbent lies in this core
            result.bound = max(result.bound, min(upper, out_c + res.bound))
        if res.status == "optimal":
            result.optimal, result.bound = True, upper
    result.choice, result.objective = choice, upper
    result.bound = min(result.bound, upper)
    return result
