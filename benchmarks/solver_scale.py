"""Solver scale: mpq ``auto`` against PuLP+CBC and HiGHS on both instance families, 1,000 to 1,000,000 groups.

Instances: ``benchmarks/mckp_instances.py``, families ``layer`` (layer sizes
over three orders of magnitude) and ``chgroup`` (equal channel groups), seed 1000 + N, 6 options per group,
budget average 4 bits. Every solver sees integer sizes (bits divided by their common factor, so the MILPs
have integer coefficients in the budget row). mpq is timed on arrays (the solver itself: JSON parsing and
plan building are benchmarks/big_problem.py's subject), median of 3 runs (1 at 1,000,000 groups), run right
before the MILPs of the same instance. The MILPs are skipped where they would take more than about two
minutes (CBC and HiGHS: above 10,000 groups; HiGHS took 165 s at 100,000 `chgroup` groups without a proof).

HiGHS runs with gap 1e-9 and its objective scaled so the optimum is near 1e4: HiGHS prunes with absolute
tolerances, and normalized by the largest cost (what ``build_milp`` does by default) it calls a solution
2e-6 above the optimum "optimal" (layer, 2,000 groups, seed 1).

Run: ``python benchmarks/solver_scale.py`` (about 4-6 minutes on 2 idle cores).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mckp_instances import integer_instance  # noqa: E402

from mpq.solvers.base import AutoSolver  # noqa: E402
from mpq.solvers._mckp import solve_mckp  # noqa: E402

SIZES = (1_000, 10_000, 100_000, 1_000_000)
FAMILIES = ("layer", "chgroup")
#: (solver, family) -> the largest size it is run at (beyond: more than about two minutes, measured)
RUN_UP_TO = {("cbc", "layer"): 10_000, ("cbc", "chgroup"): 10_000, ("highs", "layer"): 10_000, ("highs", "chgroup"): 10_000}
EXACT_TOL = 1e-9


def mpq_auto(cost, weight, cap):
    """What ``auto`` runs for one budget: the Lagrangian with its exact core (HiGHS fallback up to 100k groups)."""
    return solve_mckp(cost, weight, cap, prove=cost.shape[0] <= AutoSolver.PROVE_UP_TO)


def pulp_cbc(cost: np.ndarray, weight: np.ndarray, cap: float, time_limit: float):
    """The model as most tools write it: one binary per option, default CBC settings."""
    import pulp

    t = time.perf_counter()
    G, K = cost.shape
    prob = pulp.LpProblem("bits", pulp.LpMinimize)
    x = [[pulp.LpVariable(f"x_{g}_{k}", cat="Binary") for k in range(K)] for g in range(G)]
    prob += pulp.lpSum(float(cost[g, k]) * x[g][k] for g in range(G) for k in range(K))
    for g in range(G):
        prob += pulp.lpSum(x[g]) == 1
    prob += pulp.lpSum(int(weight[g, k]) * x[g][k] for g in range(G) for k in range(K)) <= cap
    prob.solve(pulp.PULP_CBC_CMD(msg=False, timeLimit=time_limit))
    seconds = time.perf_counter() - t
    choice = np.array([int(np.argmax([v.varValue or 0 for v in row])) for row in x])
    value = float(cost[np.arange(G), choice].sum())
    status = pulp.LpStatus[prob.status] + ("" if prob.sol_status == pulp.LpSolutionOptimal else " (stopped)")
    return seconds, value, status, None


def highs(cost: np.ndarray, weight: np.ndarray, cap: float, time_limit: float):
    """HiGHS (highspy) on the one-hot model built from arrays; gap 1e-9, optimum scaled near 1e4."""
    from mpq.solvers._milp import build_milp, choice_from_x, highs_solve

    t = time.perf_counter()
    G = cost.shape[0]
    m = build_milp(list(cost), {"cap": list(weight)}, {"cap": cap}, objective_scale=float(cost.min(1).sum()) / 1e4)
    res = highs_solve(m, time_limit_s=time_limit, gap_rel=EXACT_TOL)
    seconds = time.perf_counter() - t
    if res.x is None:
        return seconds, float("nan"), res.status, None
    value = float(cost[np.arange(G), choice_from_x(m, res.x)].sum())
    gap = None if res.bound is None else max(0.0, (value - res.bound) / value)
    return seconds, value, res.status, gap


def integer_weights(weight: np.ndarray, cap: float) -> tuple[np.ndarray, float]:
    g = int(np.gcd.reduce(weight.ravel()))
    return weight // g, float(int(cap) // g)


def row(G, family, method, seconds, objective, status) -> None:
    t = f"{seconds:9.3f}" if isinstance(seconds, float) else f"{seconds:>9}"
    obj = f"{objective:20.10f}" if isinstance(objective, float) else f"{objective:>20}"
    print(f"{G:>9,}  {family:<8} {method:<24} {t}  {obj}  {status}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default=",".join(map(str, SIZES)))
    ap.add_argument("--families", default=",".join(FAMILIES))
    ap.add_argument("--time-limit", type=float, default=150.0, help="per CBC/HiGHS run")
    ap.add_argument("--repeats", type=int, default=3, help="mpq runs per instance (median; 1 at 1,000,000 groups)")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    families = args.families.split(",")
    print(f"{'groups':>9}  {'family':<8} {'method':<24} {'seconds':>9}  {'objective':>20}  status, gap")
    print("-" * 118)
    results = {}
    warm = integer_instance(200, "layer", 1)
    mpq_auto(*warm)  # numpy's first calls
    for G in sizes:
        for family in families:
            cost, weight, cap = integer_instance(G, family, 1000 + G)
            weight, cap = integer_weights(weight, cap)
            times, res = [], None
            for _ in range(1 if G >= 1_000_000 else args.repeats):
                t = time.perf_counter()
                res = mpq_auto(cost, weight, cap)
                times.append(time.perf_counter() - t)
            t_mpq = statistics.median(times)
            gap = max(0.0, (res.objective - res.bound) / res.objective)
            lp_gap = (res.objective - res.lp_bound) / res.objective
            status = (f"{'optimal (proven)' if res.optimal else 'feasible'}, certified gap {gap:.1e}; "
                      f"LP gap {lp_gap:.1e}, core {res.core_groups} groups ({res.core_method})")
            row(G, family, "mpq auto", t_mpq, res.objective, status)
            entry = {"mpq": (t_mpq, res.objective, res.optimal, gap)}
            for name, label, fn in (("cbc", "PuLP+CBC (defaults)", pulp_cbc), ("highs", "HiGHS (gap 1e-9)", highs)):
                if G > RUN_UP_TO[(name, family)]:
                    row(G, family, label, "skipped", "", "more than ~2 min expected")
                    continue
                seconds, value, st, mgap = fn(cost, weight, cap, args.time_limit)
                diff = (value - res.objective) / res.objective
                own = "" if mgap is None else f", own gap {mgap:.1e}"
                row(G, family, label, seconds, value, f"{st}{own}; {diff:+.1e} vs mpq")
                entry[name] = (seconds, value, st, mgap)
            results[(G, family)] = entry
            print()
    print("Goals")
    proven = [(k, v["mpq"]) for k, v in results.items() if k[0] <= 100_000]
    if proven:
        worst = max(m[3] for _, m in proven)
        ok = all(m[2] and m[3] <= EXACT_TOL for _, m in proven)
        print(f"  auto proves the optimum (gap <= 1e-9) on both families up to 100,000 groups: "
              f"{sum(m[2] for _, m in proven)}/{len(proven)} proven, worst certified gap {worst:.1e} ... {'MET' if ok else 'MISSED'}")
    for (G, family), v in results.items():
        if G == 1_000_000:
            t, obj, opt, gap = v["mpq"]
            print(f"  certified gap <= 1e-9 at 1,000,000 groups ({family}): {gap:.1e} in {t:.2f} s ... "
                  f"{'MET' if gap <= EXACT_TOL else 'MISSED'}")
    for (G, family), v in results.items():
        for name in ("cbc", "highs"):
            if name in v and not np.isnan(v[name][1]):
                rel = (v["mpq"][1] - v[name][1]) / v[name][1]
                print(f"  never worse than {name.upper()} at {G:,} ({family}): {rel:+.1e} "
                      f"(negative = mpq better) ... {'MET' if rel <= EXACT_TOL else 'MISSED'}")
    for (G, family), v in results.items():
        if G == 10_000 and "highs" in v:
            t_h, val_h, st_h, _ = v["highs"]
            t_m = v["mpq"][0]
            same = st_h == "optimal" and abs(val_h - v["mpq"][1]) <= EXACT_TOL * v["mpq"][1]
            what = "proved the same optimum" if same else f"status {st_h}, {(val_h - v['mpq'][1]) / v['mpq'][1]:+.1e}"
            print(f"  proof <= 1/100 of HiGHS's time at 10,000 groups ({family}): mpq {t_m:.3f} s, HiGHS {t_h:.2f} s "
                  f"({what}): 1/{t_h / t_m:.0f} ... {'MET' if t_m * 100 <= t_h else 'MISSED'}")


if __name__ == "__main__":
    main()
