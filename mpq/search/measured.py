"""The measured objective: apply a candidate plan to the workload's model and evaluate it on calibration data.

This catches what the additive cost model misses (interactions between layers). The plan is
fake-quantized into the model in place and the original weights are restored afterwards, so a
trial costs one quantization and one pass over the calibration batches, never a model copy.
"""
from __future__ import annotations

from typing import Callable

import torch

from mpq.apply import apply_plan, planned_module
from mpq.errors import WorkloadError
from mpq.schema import Plan, Problem
from mpq.model_ref import load_workload
from mpq.workload import Workload


def measured_objective(workload: Workload) -> Callable[[Plan], float]:
    """``evaluate_plan(plan)``: the mean calibration loss of the workload's model quantized by ``plan``."""
    model = workload.model
    model.eval()

    def evaluate_plan(plan: Plan) -> float:
        saved = {}  # by target; expert slices resolve through mpq.apply like every planned layer
        for layer in plan.layers:
            if layer.target not in saved:
                module = planned_module(model, layer)
                saved[layer.target] = (module, module.weight.detach().clone())
        try:
            apply_plan(model, plan)
            return workload.calibration_loss(model)
        finally:
            with torch.no_grad():
                for module, weight in saved.values():
                    module.weight.copy_(weight)

    return evaluate_plan


def load_measured_objective(model_ref: str, problem: Problem) -> Callable[[Plan], float]:
    """Load the workload ``model_ref`` and check it is the model the problem was built for."""
    workload = load_workload(model_ref)
    expected = problem.model.fingerprint if problem.model is not None else None
    if expected:
        actual = workload.fingerprint()
        if actual != expected:
            raise WorkloadError(
                f"model {model_ref!r} has fingerprint {actual}, but the study's problem was built for {expected}; "
                "every worker must load the same weights"
            )
    return measured_objective(workload)
