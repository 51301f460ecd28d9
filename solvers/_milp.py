"""Multiple-choice knapsacks as mixed-integer programs: one-hot binaries per group, solved by HiGHS.

The model of the ``ilp`` solver (:mod:`mpq.solvers.ilp`), also used by the ``lagrangian`` solver to
prove its core (:mod:`mpq.solvers._mckp`). Pairwise terms are linearized exactly:
``y >= x_a + x_b - 1``, ``y <= x_a``, ``y <= x_b`` for the product of two binaries.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

import numpy as np

from mpq.errors import SolverFailed

from .compiled import Compiled

Pair = tuple[int, int, int, int, float]


@dataclass
class MILP:
    """``min c x`` s.t. ``lo <= A x <= hi``, ``0 <= x <= 1``; the first ``n_x`` columns are the binaries."""

    c: np.ndarray
    indptr: np.ndarray  # A in CSR
    indices: np.ndarray
    data: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    n_x: int
    offsets: np.ndarray  # first column of each group
    sizes: np.ndarray  # options per group
    scale: float  # objective divided by this


def build_milp(costs: Sequence[np.ndarray], resources: Mapping[str, Sequence[np.ndarray]], caps: Mapping[str, float], pairs: Sequence[Pair] = (),
               objective_scale: Optional[float] = None) -> MILP:
    """The one-hot model; the objective is divided by ``objective_scale`` (default: the largest cost).

    HiGHS prunes with absolute tolerances (about 1e-7 here), so an objective normalized by its
    largest cost can stop with a relative gap near 1e-6 and call it optimal; a scale that puts the
    optimum near 1e4 (the summed cheapest costs / 1e4) lets it prove a relative gap of 1e-9.
    """
    sizes = np.fromiter((len(c) for c in costs), dtype=np.int64, count=len(costs))
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    n_x = int(sizes.sum())
    cost = np.concatenate(costs).astype(np.float64)
    scale = float(np.abs(cost).max()) if cost.size else 1.0
    pd = np.array([p[4] for p in pairs], dtype=np.float64)
    if pd.size:
        scale = max(scale, float(np.abs(pd).max()))
    scale = objective_scale or scale or 1.0
    c = np.concatenate([cost, pd]) / scale
    G = len(costs)
    rows_ptr = [np.arange(0, n_x + 1, dtype=np.int64)[np.concatenate([offsets, [n_x]])]]
    indices = [np.arange(n_x, dtype=np.int64)]
    data = [np.ones(n_x)]
    lo, hi = [np.ones(G)], [np.ones(G)]
    nnz = n_x
    for name, cap in caps.items():
        r = np.concatenate(resources[name]).astype(np.float64)
        rows_ptr.append(np.array([nnz + n_x]))
        indices.append(np.arange(n_x, dtype=np.int64))
        data.append(r)
        lo.append([-np.inf])
        hi.append([float(cap)])
        nnz += n_x
    if pairs:
        P = len(pairs)
        ga = np.array([p[0] for p in pairs]); ka = np.array([p[1] for p in pairs])
        gb = np.array([p[2] for p in pairs]); kb = np.array([p[3] for p in pairs])
        xa, xb, y = offsets[ga] + ka, offsets[gb] + kb, n_x + np.arange(P)
        # y - xa - xb >= -1 ; y - xa <= 0 ; y - xb <= 0
        idx = np.concatenate([np.stack([y, xa, xb], 1).ravel(), np.stack([y, xa], 1).ravel(), np.stack([y, xb], 1).ravel()])
        val = np.concatenate([np.tile([1.0, -1.0, -1.0], P), np.tile([1.0, -1.0], 2 * P)])
        counts = np.concatenate([np.full(P, 3), np.full(2 * P, 2)])
        rows_ptr.append(nnz + np.cumsum(counts))
        indices.append(idx)
        data.append(val)
        lo.append(np.concatenate([np.full(P, -1.0), np.full(2 * P, -np.inf)]))
        hi.append(np.concatenate([np.full(P, np.inf), np.zeros(2 * P)]))
    return MILP(
        c, np.concatenate(rows_ptr).astype(np.int64), np.concatenate(indices).astype(np.int32),
        np.concatenate(data), np.concatenate([np.asarray(v, dtype=np.float64) for v in lo]),
        np.concatenate([np.asarray(v, dtype=np.float64) for v in hi]), n_x, offsets, sizes, scale,
    )


@dataclass
class HighsResult:
    x: Optional[np.ndarray]  # column values, None when no feasible point was found
    status: str  # "optimal", "feasible", "infeasible" or "failed"
    objective: Optional[float]  # in the problem's units
    bound: Optional[float]  # proven lower bound, in the problem's units


_banner_shown = False


def new_highs():
    """A silent ``highspy.Highs``. The first one a process makes prints HiGHS's banner on the C level
    stdout before any option can silence it; it is sent to stderr, so JSON written to stdout stays valid."""
    import highspy

    global _banner_shown
    if _banner_shown:
        h = highspy.Highs()
    else:
        import os
        import sys

        sys.stdout.flush()
        try:
            saved = os.dup(1)
        except OSError:  # no stdout at all: nothing to protect
            saved = None
        try:
            if saved is not None:
                os.dup2(2, 1)
            h = highspy.Highs()
        finally:
            if saved is not None:
                os.dup2(saved, 1)
                os.close(saved)
        _banner_shown = True
    h.setOptionValue("output_flag", False)
    return h


def highs_solve(m: MILP, *, relax: bool = False, time_limit_s: Optional[float] = None, gap_rel: float = 1e-9,
                start: Optional[np.ndarray] = None) -> HighsResult:
    """Solve ``m`` with HiGHS (or its LP relaxation with ``relax=True``)."""
    import highspy

    h = new_highs()
    h.setOptionValue("mip_rel_gap", gap_rel)
    h.setOptionValue("mip_abs_gap", 1e-12)
    if time_limit_s is not None:
        h.setOptionValue("time_limit", float(time_limit_s))
    lp = highspy.HighsLp()
    n = m.c.size
    lp.num_col_, lp.num_row_ = n, m.lo.size
    lp.col_cost_ = m.c
    lp.col_lower_ = np.zeros(n)
    lp.col_upper_ = np.ones(n)
    lp.row_lower_, lp.row_upper_ = m.lo, m.hi
    lp.a_matrix_.format_ = highspy.MatrixFormat.kRowwise
    lp.a_matrix_.start_ = m.indptr
    lp.a_matrix_.index_ = m.indices
    lp.a_matrix_.value_ = m.data
    if not relax:
        kinds = [highspy.HighsVarType.kInteger] * m.n_x + [highspy.HighsVarType.kContinuous] * (n - m.n_x)
        lp.integrality_ = kinds
    h.passModel(lp)
    if start is not None and not relax:
        sol = highspy.HighsSolution()
        sol.col_value = list(start)
        sol.value_valid = True
        h.setSolution(sol)
    h.run()
    ms = h.getModelStatus()
    info = h.getInfo()
    S = highspy.HighsModelStatus
    if ms == S.kInfeasible:
        return HighsResult(None, "infeasible", None, None)
    has_x = info.primal_solution_status == 2  # kSolutionStatusFeasible
    x = np.asarray(h.getSolution().col_value) if has_x else None
    obj = info.objective_function_value * m.scale if has_x else None
    if relax:
        return HighsResult(x, "optimal" if ms == S.kOptimal else "failed", obj, obj if ms == S.kOptimal else None)
    if has_x and start is not None and abs(float(m.c @ x) - info.objective_function_value) > 1e-9 * max(1.0, abs(float(m.c @ x))):
        # HiGHS 1.16 can misprice a user start (seen with pair columns) and then stop early on that
        # wrong value; a run without the start is slower but right.
        return highs_solve(m, relax=relax, time_limit_s=time_limit_s, gap_rel=gap_rel, start=None)
    bound = info.mip_dual_bound * m.scale if np.isfinite(info.mip_dual_bound) else None
    if ms == S.kOptimal and has_x:  # "optimal" within gap_rel: the plan's status is computed from the bound
        return HighsResult(x, "optimal", obj, bound if bound is not None else obj - gap_rel * abs(obj))
    return HighsResult(x, "feasible" if has_x else "failed", obj, bound)


def choice_from_x(m: MILP, x: np.ndarray) -> np.ndarray:
    """The option of each group from a (near-)integral column vector."""
    xs = x[: m.n_x]
    G = m.sizes.size
    group = np.repeat(np.arange(G), m.sizes)
    order = np.lexsort((-xs, group))  # within each group, largest value first
    first = order[m.offsets]
    choice = first - m.offsets
    if np.any(xs[first] < 0.5):
        raise SolverFailed("the MILP solution is not integral; raise the time limit")
    return choice


def one_hot(m: MILP, choice: np.ndarray, pairs: Sequence[Pair] = ()) -> np.ndarray:
    x = np.zeros(m.c.size)
    x[m.offsets + choice] = 1.0
    for i, (ga, ka, gb, kb, _) in enumerate(pairs):
        x[m.n_x + i] = float(choice[ga] == ka and choice[gb] == kb)
    return x


def highs_mckp(costs, resources, caps, pairs: Sequence[Pair] = (), *, time_limit_s: Optional[float] = None):
    """(choice or None, proven optimal) for a small multiple-choice knapsack, e.g. a Lagrangian core."""
    m = build_milp(costs, resources, caps, pairs)
    res = highs_solve(m, time_limit_s=time_limit_s)
    if res.x is None:
        return None, False
    return choice_from_x(m, res.x), res.status == "optimal"


def lp_bound(cp: Compiled) -> Optional[float]:
    """The LP relaxation's optimum: a proven lower bound for any integer solution."""
    m = build_milp(cp.cost, cp.resources, cp.caps, cp.pairs)
    return highs_solve(m, relax=True).bound
