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
