"""The default method's mechanics on tiny models: the budget holds, it is deterministic, refinement never hurts its seed."""
import pytest
import torch
from torch import nn

from mpq.cost import CandidateSet
from mpq.errors import DocumentError
from mpq.pipeline import DEFAULT_ESTIMATOR, DEFAULT_REFINE_EVALS, plan_model
from mpq.plan import recount, violations
from mpq.refine import floor_plans, refine_plan
from mpq.search.measured import measured_objective
from mpq.solvers import get_solver
from mpq.workload import Workload
from tests.helpers.models import mlp_batches, tiny_mlp

CANDIDATES = CandidateSet(bits=(2, 3, 4, 6, 8))


def workload():
    return Workload(model=tiny_mlp(), batches=mlp_batches(), loss_fn=nn.functional.cross_entropy, name="tiny-mlp")


@pytest.mark.parametrize("bits", [4.0, 5.0, 6.5])
def test_default_plan_holds_the_budget_and_never_loses_to_its_seed(one_thread, bits):
    wl = workload()
    seed = plan_model(wl, {"max_avg_bits": bits}, candidates=CANDIDATES, refine=0, use_cache=False)
    result = plan_model(wl, {"max_avg_bits": bits}, candidates=CANDIDATES, use_cache=False)
    assert result.table.estimator == DEFAULT_ESTIMATOR and result.refinement is not None
    assert not violations(result.plan.totals, {"max_avg_bits": bits})
    assert recount(result.plan)["avg_bits"] <= bits + 1e-12
    objective = measured_objective(wl)
    assert objective(result.plan) <= objective(seed.plan)
    assert result.refinement.objective == pytest.approx(objective(result.plan))
    assert result.refinement.evaluations <= DEFAULT_REFINE_EVALS


def test_default_plan_is_deterministic(one_thread):
    plans = [plan_model(workload(), {"max_avg_bits": 4.5}, candidates=CANDIDATES, use_cache=False).plan for _ in range(2)]
    assert [l.option for l in plans[0].layers] == [l.option for l in plans[1].layers]
    assert plans[0].totals == plans[1].totals


def test_refinement_keeps_a_move_only_when_the_measured_objective_drops(one_thread):
    wl = workload()
    result = plan_model(wl, {"max_avg_bits": 4.2}, candidates=CANDIDATES, refine=0, use_cache=False)
    calls = []

    def objective(plan):
        calls.append(plan)
        # an objective that prefers more bits on the first layer than the additive model does
        return -sum(l.w_bits for l in plan.layers if l.name == "0") + 0.01 * plan.totals.distortion

    ref = refine_plan(result.problem, result.plan, objective, max_evals=30)
    assert ref.objective <= ref.seed_objective
    assert ref.evaluations == len(calls) <= 30
    for plan in calls:
        assert not violations(plan.totals, result.problem.constraints)
    if ref.accepted:
        assert ref.plan.solver.name.endswith("+refine") and ref.plan.solver.status == "feasible"
    first = {l.name: l.w_bits for l in ref.plan.layers}["0"]
    assert first >= {l.name: l.w_bits for l in result.plan.layers}["0"]


def test_refinement_returns_the_seed_when_nothing_measures_better(one_thread):
    result = plan_model(workload(), {"max_avg_bits": 4.2}, candidates=CANDIDATES, refine=0, use_cache=False)
    ref = refine_plan(result.problem, result.plan, lambda plan: 1.0, max_evals=8)
    assert ref.plan == result.plan and ref.accepted == 0 and ref.objective == ref.seed_objective == 1.0


def test_floor_plans_are_within_budget_and_include_uniform(one_thread):
    result = plan_model(workload(), {"max_avg_bits": 4.5}, candidates=CANDIDATES, refine=0, use_cache=False)
    plans = floor_plans(result.problem)
    assert plans and all(not violations(p.totals, result.problem.constraints) for p in plans)
    assert any(len({l.option for l in p.layers}) == 1 for p in plans)


def test_refinement_respects_ties(one_thread):
    wl = workload()
    result = plan_model(wl, {"max_avg_bits": 4.2}, candidates=CANDIDATES, refine=0, use_cache=False)
    problem = result.problem.model_copy(update={"ties": [["0", "2"]]})
    plan = get_solver("auto").solve(problem)
    ref = refine_plan(problem, plan, lambda p: -sum(l.w_bits for l in p.layers if l.name == "4"), max_evals=20)
    options = {l.name: l.option for l in ref.plan.layers}
    assert options["0"] == options["2"]


def test_refinement_needs_one_evaluation(one_thread):
    result = plan_model(workload(), {"max_avg_bits": 4.2}, candidates=CANDIDATES, refine=0, use_cache=False)
    with pytest.raises(DocumentError, match="max_evals"):
        refine_plan(result.problem, result.plan, lambda p: 0.0, max_evals=0)


def test_floor_plans_include_one_granularity_optima_on_a_mixed_grid(one_thread):
    """A grid of per-channel and grouped options gives, beside the bit floors, the additive optimum at
    each single group size (each exact within its restriction and within budget); a layer too narrow
    for the group keeps its per-channel options there."""
    torch.manual_seed(0)
    wl = Workload(model=nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 4)).eval(), batches=mlp_batches(),
                  loss_fn=nn.functional.cross_entropy, name="mixed")
    cands = CandidateSet(bits=(2, 3, 4, 8), group_sizes=(None, 16))
    result = plan_model(wl, {"max_avg_bits": 5.0}, candidates=cands, refine=0, use_cache=False)
    assert all(o.group_size is None for o in result.problem.layers[0].options)  # 8 inputs: no group of 16
    plans = floor_plans(result.problem)
    assert all(not violations(p.totals, result.problem.constraints) for p in plans)
    grains = [{l.name: l.group_size for l in p.layers if l.format != "float"} for p in plans]
    assert {"0": None, "2": 16} in grains and {"0": None, "2": None} in grains
    grouped = plans[grains.index({"0": None, "2": 16})]
    only = result.problem.model_copy(update={"layers": [
        result.problem.layers[0],
        result.problem.layers[1].model_copy(update={"options": [o for o in result.problem.layers[1].options
                                                                if o.group_size == 16 or o.format == "float"]})]})
    assert grouped.totals.distortion == pytest.approx(get_solver("dp").solve(only).totals.distortion)
    single = plan_model(wl, {"max_avg_bits": 5.0}, candidates=CandidateSet(bits=(2, 3, 4, 8)), refine=0, use_cache=False)
    assert all({l.group_size for l in p.layers} == {None} for p in floor_plans(single.problem))  # one granularity: none added


def test_floor_plans_skip_a_restriction_that_leaves_a_tie_no_common_option():
    """Tied layers need an option id in common; a restriction that removes all of them is skipped,
    not handed to the solver (which failed on it with an IndexError)."""
    from mpq.schema import Problem

    def opt(oid, bits, group, distortion):
        size = 4 * (64 * bits + 16 * (64 // group if group else 1))
        return {"id": oid, "w_bits": bits, "group_size": group, "bits": size, "bytes": -(-size // 8), "distortion": distortion}

    layers = [
        {"name": "a", "params": 256, "options": [opt("int3", 3, None, 5.0), opt("int4", 4, None, 2.0)]},
        {"name": "b", "params": 256, "options": [opt("int3", 3, None, 5.0), opt("int3-g16", 3, 16, 3.0),
                                                 opt("int4", 4, None, 2.0), opt("int4-g16", 4, 16, 1.0)]},
    ]
    problem = Problem.model_validate({"schema": "mpq.problem/v1", "layers": layers, "ties": [["a", "b"]],
                                      "constraints": {"max_avg_bits": 4.5}})
    plans = floor_plans(problem)
    assert plans and all({l.option for l in p.layers} in ({"int3"}, {"int4"}) for p in plans)


def test_refinement_moves_a_layer_held_on_an_option_the_additive_model_dominates(one_thread):
    """A start whose layer sits on a dominated option (as a one-granularity alternative may) still gets moves
    for that layer: up to the next larger option of its ladder."""
    from mpq.plan import build_plan
    from mpq.schema import SolverInfo

    result = plan_model(workload(), {"max_avg_bits": 7.0}, candidates=CANDIDATES, refine=0, use_cache=False)
    layers = []
    for l in result.problem.layers:
        if l.name == "0":  # int4 made worse than int3, which is smaller: off layer 0's ladder
            worse = 2 * l.option("int3").distortion + 1.0
            l = l.model_copy(update={"options": [o.model_copy(update={"distortion": worse}) if o.id == "int4" else o
                                                 for o in l.options]})
        layers.append(l)
    problem = result.problem.model_copy(update={"layers": layers})
    start = build_plan(problem, {l.name: "int4" for l in layers}, SolverInfo(name="start", status="feasible", objective=0.0))
    ref = refine_plan(problem, start, lambda p: -sum(l.w_bits for l in p.layers if l.name == "0"), max_evals=6)
    assert {l.name: l.w_bits for l in ref.plan.layers}["0"] > 4
    assert not violations(ref.plan.totals, problem.constraints)


def test_a_step_up_is_paired_with_a_step_down_large_enough_to_pay_for_it():
    """On a mixed grid at a binding budget one step down may only drop scales while one step up adds a bit:
    the swap pairs the step up with the other layer's nearest step down that makes room (here two steps),
    and every measured plan fits."""
    from mpq.plan import build_plan
    from mpq.schema import Problem, SolverInfo

    def opt(oid, bits, group, distortion):
        size = 4 * (64 * bits + 16 * (64 // group if group else 1))
        return {"id": oid, "w_bits": bits, "group_size": group, "bits": size, "bytes": -(-size // 8), "distortion": distortion}

    options = [opt("int3", 3, None, 5.0), opt("int4", 4, None, 2.0), opt("int4-g16", 4, 16, 1.5), opt("int6", 6, None, 0.5)]
    layers = [{"name": n, "params": 256, "options": options} for n in ("a", "b")]
    start_bytes = 2 * options[2]["bytes"]  # both at int4-g16: the budget binds
    problem = Problem.model_validate({"schema": "mpq.problem/v1", "layers": layers, "constraints": {"max_bytes": start_bytes}})
    start = build_plan(problem, {"a": "int4-g16", "b": "int4-g16"}, SolverInfo(name="start", status="feasible", objective=0.0))
    seen = []

    def objective(plan):
        seen.append(plan)
        return -{l.name: l.w_bits for l in plan.layers}["a"]

    ref = refine_plan(problem, start, objective, max_evals=4)
    assert {l.name: l.option for l in ref.plan.layers} == {"a": "int6", "b": "int3"}
    assert all(not violations(p.totals, problem.constraints) for p in seen)
