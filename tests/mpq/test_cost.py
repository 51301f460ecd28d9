"""The cost model's option set per layer."""
from __future__ import annotations

import torch
from torch import nn

from mpq.cost import CandidateSet, build_problem
from mpq.graph import discover
from mpq.schema import LayerSensitivity, SensitivityTable
from mpq.solvers import get_solver
from mpq.workload import Workload


def narrow_and_wide():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 256), nn.ReLU(), nn.Linear(256, 4)).eval()
    batches = [(torch.randn(4, 32), torch.zeros(4, dtype=torch.long))]
    wl = Workload(model, batches, nn.functional.cross_entropy, name="narrow-wide")
    graph = discover(wl)
    table = SensitivityTable(estimator="test", layers={l.name: LayerSensitivity(score=1.0, params=l.params) for l in graph})
    return graph, table


def test_a_group_as_wide_as_the_inputs_gives_way_to_its_per_channel_twin():
    graph, table = narrow_and_wide()
    problem = build_problem(graph, table, CandidateSet(bits=(3, 4, 16), group_sizes=(None, 128)), {"max_avg_bits": 3.5})
    ids = {l.name: [o.id for o in l.options] for l in problem.layers}
    assert ids["0"] == ["int3", "int4", "fp16"]  # 32 inputs: g128 is one group per row, the same option
    assert ids["2"] == ["int3", "int3-g128", "int4", "int4-g128", "fp16"]  # 256 inputs: two groups per row
    plan = get_solver("auto").solve(problem)
    assert all(l.group_size is None for l in plan.layers if l.name == "0")


def test_a_group_only_grid_keeps_its_group_options_on_narrow_layers():
    graph, table = narrow_and_wide()
    problem = build_problem(graph, table, CandidateSet(bits=(4,), group_sizes=(128,)), {"max_avg_bits": 8.0})
    assert [o.id for o in problem.layers[0].options] == ["int4-g128"]


def test_pair_terms_keep_only_options_both_layers_have():
    """A pair measured at a group option that the narrow layer does not keep is left out, not refused."""
    from mpq.schema import PairOption, SensitivityPair

    graph, table = narrow_and_wide()
    table = table.model_copy(update={"pairs": [SensitivityPair(a="0", b="2", score=1.0, options=[
        PairOption(option_a="int3-g128", option_b="int3-g128", distortion=5.0),  # "0" has no int3-g128
        PairOption(option_a="int3", option_b="int3-g128", distortion=2.0),
    ])]})
    problem = build_problem(graph, table, CandidateSet(bits=(3, 4, 16), group_sizes=(None, 128)), {"max_avg_bits": 3.5})
    assert [(p.option_a, p.option_b, p.distortion) for p in problem.pairs] == [("int3", "int3-g128", 2.0)]
