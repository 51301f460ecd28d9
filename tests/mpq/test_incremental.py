"""The incremental measured objective gives the stateless objective's numbers, skips only what it may, and restores the model."""
import random

import pytest

from mpq.cost import CandidateSet
from mpq.incremental import IncrementalObjective
from mpq.pipeline import plan_model
from mpq.plan import build_plan
from mpq.search.measured import measured_objective
from mpq.workload import model_fingerprint
from tests.helpers.hf_tiny import tiny_hf  # noqa: F401  (session fixture)


def _planned(kind, tiny_hf):
    from mpq.model_ref import load_workload

    wl = load_workload(str(tiny_hf[kind]), calib=str(tiny_hf["calib"]), hf={"batch_size": 3})
    r = plan_model(wl, {"max_avg_bits": 6}, candidates=CandidateSet(bits=(2, 4, 8)), refine=0, use_cache=False,
                   estimator="weight-error")
    return wl, r


@pytest.mark.parametrize("kind", ["llama", "bert", "mixtral"])
def test_every_value_equals_the_stateless_objective_and_the_model_comes_back(kind, tiny_hf, one_thread):
    wl, r = _planned(kind, tiny_hf)
    before = model_fingerprint(wl.model)
    stateless = measured_objective(wl)
    expected, plans = [], []
    rng = random.Random(0)
    choice = {l.name: l.option for l in r.plan.layers}
    options = {l.name: [o.id for o in l.options] for l in r.problem.layers}
    late = [n for n in choice if ".1." in n]  # layers of the last block: moves there reuse block 0's outputs
    for step in range(10):
        plans.append(build_plan(r.problem, dict(choice), r.plan.solver))
        for name in rng.sample(late if step % 2 else list(choice), 1 + step % 2):
            choice[name] = rng.choice(options[name])
    expected = [stateless(p) for p in plans]
    assert model_fingerprint(wl.model) == before
    with IncrementalObjective(wl) as objective:
        values = [objective(p) for p in plans]
        skipped = objective.blocks_skipped
    assert values == expected  # bit for bit: same kernels on the same inputs
    assert model_fingerprint(wl.model) == before
    assert skipped > 0


def test_a_plan_with_activation_bits_is_refused(tiny_hf, one_thread):
    from mpq.errors import DocumentError

    wl, r = _planned("llama", tiny_hf)
    before = model_fingerprint(wl.model)
    layers = [l.model_copy(update={"a_bits": 8}) if i == 0 else l for i, l in enumerate(r.plan.layers)]
    plan = r.plan.model_copy(update={"layers": layers})
    with IncrementalObjective(wl) as objective, pytest.raises(DocumentError, match="activation"):
        objective(plan)
    assert model_fingerprint(wl.model) == before
