"""Bisection baseline (Hessian sensitivity with inter-layer dependencies): lower the least sensitive layers.

Groups are ordered by sensitivity (the distortion added by going from the ``high`` option to the
``low`` one). Plan *k* puts the *k* least sensitive groups at ``low`` and the rest at ``high``; a
bisection over *k* finds the largest *k* whose measured metric drop stays within ``max_drop``,
measuring each candidate with ``evaluate_plan`` (plan -> score, higher is better; see
``mpq.evaluate.plan_evaluator`` for the model-facing glue). The solver itself never touches torch.
Without ``max_drop`` the target is the budget: the fewest lowered layers whose plan fits (so
``mpq solve --solver bisection`` works on a bare problem). Assumes the drop grows with *k*; not
exact: status ``feasible``.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from pydantic import Field

from mpq.errors import PlanInfeasible, SolverNotApplicable
from mpq.settings import Hook, NonNegReal, Real
from mpq.schema import SolverInfo

from .base import Solution, Solver, register_solver
from .compiled import Compiled


@register_solver
class BisectionSolver(Solver):
    """Baseline: bisection over sensitivity-ordered layers to meet a measured accuracy-drop target."""

    name = "bisection"

    class Settings(Solver.Settings):
        evaluate_plan: Hook = Field(None, description="plan -> score (higher is better), for max_drop")
        max_drop: Optional[NonNegReal] = Field(None, description="the allowed drop of the measured score")
        baseline: Optional[Real] = Field(None, description="the unquantized score (measured when not given)")
        low: Optional[str] = Field(None, description="option id of the lowered layers (default: each layer's smallest)")
        high: Optional[str] = Field(None, description="option id of the kept layers (default: each layer's largest)")

    def __init__(self, **settings):
        super().__init__(**settings)
        if self.max_drop is not None and self.evaluate_plan is None:
            raise SolverNotApplicable(
                "bisection with max_drop measures each candidate plan: give evaluate_plan=<callable plan -> score> "
                "(e.g. mpq.evaluate.plan_evaluator(workload)), or use `mpq plan MODEL --solver bisection --max-drop D`"
            )
        self.history: list[tuple[int, float]] = []  # (layers lowered, score) per evaluation

    def _pick(self, cp: Compiled, oid: Optional[str], largest: bool) -> np.ndarray:
        name = next(iter(cp.caps))
        out = np.zeros(cp.n_groups, dtype=np.int64)
        for g, ids in enumerate(cp.option_ids):
            if oid is not None:
                if oid not in ids:
                    raise SolverNotApplicable(f"bisection: layer {cp.groups[g][0]!r} has no option {oid!r} (it has {ids})")
                out[g] = ids.index(oid)
            else:
                r = np.asarray(cp.resources[name][g], dtype=np.float64)
                out[g] = int(np.argmax(r) if largest else np.argmin(r))
        return out

    def _solve(self, cp: Compiled) -> Solution:
        high = self._pick(cp, self.high, largest=True)
        low = self._pick(cp, self.low, largest=False)
        rows = np.arange(cp.n_groups)
        cost = np.array([cp.cost[g][low[g]] - cp.cost[g][high[g]] for g in rows])
        order = np.argsort(cost, kind="stable")  # least sensitive first

        def choice_for(k: int) -> np.ndarray:
            c = high.copy()
            c[order[:k]] = low[order[:k]]
            return c

        def score(k: int) -> float:
            plan = cp.plan(choice_for(k), SolverInfo(name=self.name, status="feasible", objective=0.0), verify=False)
            value = float(self.evaluate_plan(plan))
            self.history.append((k, value))
            return value

        G = cp.n_groups
        if self.max_drop is None:  # meet the budget with the fewest layers lowered
            if not cp.fits(choice_for(G)):
                use = cp.usage(choice_for(G))
                need = {n: cp.cap_value(n, use[n]) for n in cp.caps}
                raise PlanInfeasible("bisection: even every layer at its low option needs "
                                     + ", ".join(f"{n}={v:.6g}" for n, v in need.items()), need)
            lo, hi = -1, G  # fits(hi); lo does not (or is -1)
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if cp.fits(choice_for(mid)):
                    hi = mid
                else:
                    lo = mid
            return Solution(choice_for(hi), "feasible", None)
        baseline = float(self.baseline) if self.baseline is not None else score(0)
        ok = lambda k: baseline - score(k) <= self.max_drop  # noqa: E731
        if ok(G):
            best = G
        else:
            lo, hi = 0, G  # ok(lo) assumed (all layers high), hi known to fail
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if ok(mid):
                    lo = mid
                else:
                    hi = mid
            best = lo
        choice = choice_for(best)
        if not cp.fits(choice):
            use = cp.usage(choice)
            need = {n: cp.cap_value(n, use[n]) for n in cp.caps if use[n] > cp.caps[n]}
            raise PlanInfeasible(
                f"bisection: the smallest plan within max_drop={self.max_drop:g} ({best} of {G} layers lowered) needs "
                + ", ".join(f"{n}={v:.6g}" for n, v in need.items()) + "; raise the budget or allow a larger drop",
                need,
            )
        return Solution(choice, "feasible", None)
