"""The measured objective (mpq.search.measured): the quantized model's calibration loss, its weights restored."""
from __future__ import annotations

import pytest

from mpq.solvers import get_solver


def test_measured_objective_evaluates_the_quantized_model_and_restores_its_weights(tiny_problem):
    from mpq.apply import apply_plan
    from mpq.search.measured import measured_objective

    wl, problem = tiny_problem
    before = {k: v.clone() for k, v in wl.model.state_dict().items()}
    plan = get_solver("dp").solve(problem)
    value = measured_objective(wl)(plan)
    assert all((wl.model.state_dict()[k] == v).all() for k, v in before.items())
    assert value == pytest.approx(wl.calibration_loss(apply_plan(wl.model, plan, inplace=False)))
    assert value != pytest.approx(wl.calibration_loss())


def test_a_worker_refuses_a_model_whose_weights_differ_from_the_problems(tiny_problem):
    from mpq.errors import WorkloadError
    from mpq.search.measured import load_measured_objective

    _, problem = tiny_problem
    other = problem.model_copy(update={"model": problem.model.model_copy(update={"fingerprint": "sha256:" + "0" * 64})})
    with pytest.raises(WorkloadError, match="sha256:0000.*every worker must load the same weights"):
        load_measured_objective("tinywl:workload", other)
