"""Evaluate plans on a workload: full precision, planned, and uniform baselines of comparable size."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from .apply import apply_plan
from .plan import build_plan
from .schema import Plan, Problem, SolverInfo
from .workload import Workload


def metrics(workload: Workload, model=None) -> dict[str, float]:
    """The workload's own metrics, or the calibration loss when it has no evaluator."""
    model = workload.model if model is None else model
    if workload.evaluate is not None:
        return {k: float(v) for k, v in workload.evaluate(model).items()}
    return {"calibration_loss": workload.calibration_loss(model)}


def uniform_options(problem: Problem) -> list[str]:
    """Option ids every layer has (candidates for a uniform-precision baseline)."""
    common = set(o.id for o in problem.layers[0].options)
    for l in problem.layers[1:]:
        common &= {o.id for o in l.options}
    return [o.id for o in problem.layers[0].options if o.id in common]


def uniform_plan(problem: Problem, option: str) -> Plan:
    choice = {l.name: option for l in problem.layers}
    plan = build_plan(problem, choice, SolverInfo(name=f"uniform:{option}", status="feasible", objective=0.0))
    plan.solver.objective = plan.totals.distortion
    return plan


def uniform_baselines(problem: Problem, plan: Plan) -> dict[str, Optional[Plan]]:
    """The smallest uniform plan at least as large as ``plan``, and the largest one no larger."""
    plans = sorted((uniform_plan(problem, o) for o in uniform_options(problem)), key=lambda p: p.totals.bytes)
    at_least = next((p for p in plans if p.totals.bytes >= plan.totals.bytes), None)
    at_most = next((p for p in reversed(plans) if p.totals.bytes <= plan.totals.bytes), None)
    return {"same_or_larger": at_least, "same_or_smaller": at_most}


@dataclass
class Evaluation:
    label: str
    plan: Optional[Plan]
    metrics: dict[str, float]


def evaluate_plans(workload: Workload, plans: dict[str, Optional[Plan]]) -> list[Evaluation]:
    out = [Evaluation("full precision", None, metrics(workload))]
    for label, plan in plans.items():
        if plan is None:
            continue
        model = apply_plan(workload.model, plan, inplace=False, batches=workload.batches)
        out.append(Evaluation(label, plan, metrics(workload, model)))
    return out


#: metric names where lower is better (the score passed to solvers is negated for them)
LOWER_IS_BETTER = ("loss", "perplexity", "ppl", "error", "mse")


class PlanEvaluator:
    """``plan -> score`` (higher is better) for solvers that measure candidates, e.g. ``bisection``.

    Applies each plan to a copy of the workload's model and reads one metric of the workload's
    ``evaluate`` (or the calibration loss). ``baseline`` is the full-precision score.
    """

    def __init__(self, workload: Workload, metric: Optional[str] = None):
        self.workload = workload
        full = metrics(workload)
        if metric is None:
            metric = "accuracy" if "accuracy" in full else next(iter(full))
        if metric not in full:
            from .errors import WorkloadError

            raise WorkloadError(f"metric {metric!r} is not reported by the workload; it reports {sorted(full)}")
        self.metric = metric
        self.sign = -1.0 if any(w in metric.lower() for w in LOWER_IS_BETTER) else 1.0
        self.baseline = self.sign * full[metric]
        self.calls = 0

    def __call__(self, plan: Plan) -> float:
        self.calls += 1
        model = apply_plan(self.workload.model, plan, inplace=False)
        return self.sign * metrics(self.workload, model)[self.metric]


def plan_evaluator(workload: Workload, metric: Optional[str] = None) -> PlanEvaluator:
    return PlanEvaluator(workload, metric)
