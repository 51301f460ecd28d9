"""Sub-layer (output-channel) groups: built by the cost model, solved, applied and recounted."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from mpq.apply import apply_plan
from mpq.cost import CandidateSet, build_problem, channel_slices
from mpq.errors import DocumentError
from mpq.graph import discover
from mpq.plan import recount
from mpq.quant import QuantSpec, fake_quantize
from mpq.schema import LayerSensitivity, SensitivityTable
from mpq.sizes import to_bytes, weight_bits
from mpq.solvers import get_solver
from mpq.workload import Workload


def tiny():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 7), nn.ReLU(), nn.Linear(7, 3)).eval()
    batches = [(torch.randn(4, 8), torch.zeros(4, dtype=torch.long))]
    return Workload(model, batches, nn.functional.cross_entropy, name="tiny")


def test_channel_slices_cover_every_output_channel_once():
    assert channel_slices(7, 3) == [(0, 2), (2, 5), (5, 7)]
    assert channel_slices(3, 8) == [(0, 1), (1, 2), (2, 3)]


def test_a_plan_with_channel_groups_applies_slice_by_slice_and_recounts():
    wl = tiny()
    graph = discover(wl)
    table = SensitivityTable(estimator="test", layers={l.name: LayerSensitivity(score=1.0, params=l.params) for l in graph})
    problem = build_problem(graph, table, CandidateSet(bits=(2, 4, 8)), {"max_avg_bits": 5.0}, channel_groups=3)
    names = [l.name for l in problem.layers]
    assert names == ["0[0:2]", "0[2:5]", "0[5:7]", "2[0:1]", "2[1:2]", "2[2:3]"]
    first = problem.layers[0]
    assert (first.module, first.channels, first.shape, first.params) == ("0", (0, 2), [7, 8], 16)
    assert first.option("int4").bits == weight_bits([2, 8], 4)  # sized for the slice, scales included
    plan = get_solver("auto").solve(problem)
    assert recount(plan) == {"bytes": plan.totals.bytes, "avg_bits": pytest.approx(plan.totals.avg_bits)}
    assert plan.totals.bytes == sum(to_bytes(weight_bits([b - a, *l.shape[1:]], l.w_bits)) for l in plan.layers for a, b in [l.channels])
    assert len({l.option for l in plan.layers}) > 1  # the slices really differ
    before = {n: m.weight.detach().clone() for n, m in wl.model.named_modules() if isinstance(m, nn.Linear)}
    quantized = apply_plan(wl.model, plan, inplace=False)
    for l in plan.layers:
        a, b = l.channels
        got = quantized.get_submodule(l.module).weight[a:b]
        want = fake_quantize(before[l.module][a:b], QuantSpec.of(l))
        torch.testing.assert_close(got, want)
    assert torch.equal(wl.model[0].weight, before["0"])  # the original model is untouched


def test_channel_groups_refuse_ties():
    wl = tiny()
    graph = discover(wl)
    table = SensitivityTable(estimator="test", layers={l.name: LayerSensitivity(score=1.0, params=l.params) for l in graph})
    with pytest.raises(DocumentError, match="cannot be combined with channel_groups"):
        build_problem(graph, table, CandidateSet(bits=(4, 8)), {"max_avg_bits": 5.0}, channel_groups=2, ties=[["0", "2"]])
