"""Activation sensitivity: measured per layer and a_bits, added to the weight distortion of W×A options."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from mpq.activations import Fp8Quantizer, PerTokenQuantizer, activation_id
from mpq.cost import CandidateSet, build_problem
from mpq.errors import UnknownLayer
from mpq.graph import discover
from mpq.pipeline import plan_model
from mpq.schema import LayerSensitivity, SensitivityTable
from mpq.sensitivity.activation import measure_activation_sensitivity, with_activation_sensitivity
from mpq.workload import Workload

from tests.helpers.models import mlp_batches, tiny_mlp


def _workload():
    """The tiny MLP trained briefly on its batches: an untrained model's loss can fall when perturbed."""
    model, batches = tiny_mlp(), mlp_batches()
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(60):
        for x, y in batches:
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    return Workload(model.eval(), batches, nn.functional.cross_entropy, name="tiny-mlp")


def test_fewer_activation_bits_cost_more_measured_loss_for_every_format(one_thread):
    w = _workload()
    graph = discover(w)
    d = measure_activation_sensitivity(w, graph, [2, 4, 8], formats=("int", "int-token", "fp8_e4m3"))
    for name in graph.names:
        assert set(d[name]) == {"a2", "a4", "a8", "a2-token", "a4-token", "a8-token", "a8-fp8"}
        assert all(v >= 0 for v in d[name].values())
        assert d[name]["a2"] > d[name]["a8"]
        assert d[name]["a2-token"] > d[name]["a8-token"]
    assert sum(d[n]["a2"] for n in graph.names) > 10 * sum(d[n]["a8"] for n in graph.names)


def test_w_x_a_option_costs_weight_plus_activation_distortion():
    w = _workload()
    graph = discover(w)
    layers = {n: LayerSensitivity(score=1.0, params=graph.layers[n].params) for n in graph.names}
    table = with_activation_sensitivity(SensitivityTable(estimator="t", layers=layers), w, graph, [4, None])
    cands = CandidateSet(bits=(4, 16), a_bits=(None, 4))
    problem = build_problem(graph, table, cands, {"max_bitops": 1e12})
    for layer in problem.layers:
        d_a = table.layers[layer.name].activations["a4"]
        assert d_a > 0
        assert layer.option("int4-a4").distortion == pytest.approx(layer.option("int4").distortion + d_a)
        assert layer.option("fp16-a4").distortion == pytest.approx(d_a)
        assert layer.option("int4-a4").bitops * 4 == layer.option("int4").bitops


def test_a_bits_options_without_activation_distortion_are_refused_by_name():
    w = _workload()
    graph = discover(w)
    layers = {n: LayerSensitivity(score=1.0, params=graph.layers[n].params) for n in graph.names}
    with pytest.raises(UnknownLayer, match=r"no activation distortion 'a8' for layer '0'"):
        build_problem(graph, SensitivityTable(estimator="t", layers=layers), CandidateSet(a_bits=(8,)), {"max_bitops": 1e9})


def test_bitops_plan_trades_weight_bits_against_activation_bits(one_thread):
    """At the BitOps of uniform W4A8 the plan does not push every layer to a2, which the blind model did."""
    w = _workload()
    graph = discover(w)
    budget = sum(l.macs for l in graph) * 4 * 8
    cands = CandidateSet(bits=(2, 4, 8, 16), a_bits=(2, 4, 8, None))
    result = plan_model(w, {"max_bitops": budget}, estimator="weight-error", candidates=cands)
    assert result.plan.totals.bitops <= budget
    assert any(l.a_bits != 2 for l in result.plan.layers)
    assert all(l.activations for l in result.table.layers.values())


def test_per_token_and_fp8_quantizers():
    x = torch.randn(5, 16) * torch.arange(1, 6).unsqueeze(1)
    q = PerTokenQuantizer(3).quantize(x)
    assert all(len(torch.unique(row)) <= 8 for row in q)
    assert (q - x).abs().max() < x.abs().max() / 3
    f = Fp8Quantizer(-448.0, 448.0).quantize(torch.tensor([0.0, 1.0, -2.0, 3.0, 300.0, 1000.0]))
    assert torch.equal(f, torch.tensor([0.0, 1.0, -2.0, 3.0, 288.0, 448.0]))  # e4m3 steps by 32 in [256, 512)
    assert activation_id(8, "fp8_e4m3") == "a8-fp8" and activation_id(4, "int-token") == "a4-token"
