"""Fused 3-D expert tensors (transformers 5 MoE) are per-expert layers: discovered, planned, applied, weighted."""
from __future__ import annotations

import json

import pytest
import torch

from mpq.apply import apply_plan
from mpq.cost import CandidateSet, build_problem
from mpq.graph import discover
from mpq.pipeline import sensitivities
from mpq.quant import QuantSpec
from mpq.schema import Plan
from mpq.model_ref import load_workload
from tests.helpers.plans import plan_from_specs


def _expert_tensors(model):
    return {n: p for n, p in model.named_parameters() if p.dim() == 3 and ".experts." in n}


@pytest.mark.parametrize("arch", ["mixtral", "qwen2_moe", "qwen3_moe"])
def test_every_expert_slice_is_a_layer_and_every_expert_weight_is_counted(tiny_hf, arch):
    w = load_workload(str(tiny_hf[arch]), calib=str(tiny_hf["calib"]))
    fused = _expert_tensors(w.model)
    assert fused
    with torch.no_grad():
        before = w.model(**w.batches[0][0]).logits
    keys = sorted(w.model.state_dict())
    graph = discover(w)
    for pname, p in fused.items():
        for e in range(p.shape[0]):
            info = graph.layers[f"{pname}[{e}]"]
            assert info.params == p[e].numel() and info.macs > 0
    linear = sum(m.weight.numel() for m in w.model.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Embedding)))
    assert sum(l.params for l in graph) == linear + sum(p.numel() for p in fused.values())
    with torch.no_grad():  # the per-expert layers compute what the fused forward did; the state dict is the same
        assert torch.allclose(w.model(**w.batches[0][0]).logits, before, atol=1e-6)
    assert sorted(w.model.state_dict()) == keys


def test_the_moe_plan_counts_every_expert_weight_and_records_routing(tiny_hf, tmp_path, one_thread):
    from mpq.cli import main

    out = tmp_path / "plan.json"
    rc = main(["plan", str(tiny_hf["mixtral"]), "--calib", str(tiny_hf["calib"]), "--estimator", "fisher", "--bits", "3,4,8",
               "--quiet", "--no-cache", "--no-eval", "-o", str(out)])
    assert rc == 0
    plan = json.loads(out.read_text())
    w = load_workload(str(tiny_hf["mixtral"]), calib=str(tiny_hf["calib"]))
    fused = _expert_tensors(w.model)
    planned = {l["name"]: l["params"] for l in plan["layers"]}
    for pname, p in fused.items():
        assert sum(planned[f"{pname}[{e}]"] for e in range(p.shape[0])) == p.numel()
    assert plan["totals"]["params"] == sum(planned.values()) if "params" in plan["totals"] else True

    graph = discover(w)
    table = sensitivities(w, "weight-error", graph=graph, use_cache=False, quiet=True)
    freq = {n: l.model_extra["routing_frequency"] for n, l in table.layers.items() if "routing_frequency" in (l.model_extra or {})}
    assert set(freq) == {f"{p}[{e}]" for p, t in fused.items() for e in range(t.shape[0])}
    layer0 = [f for n, f in freq.items() if n.startswith("model.layers.0.mlp.experts.gate_up_proj")]
    assert sum(layer0) == pytest.approx(2.0)  # top-2 routing: every token position goes to two experts
    name = next(iter(freq))
    options = CandidateSet(bits=[4, 8])
    plain = build_problem(graph, table, options, {"max_avg_bits": 6}).layer(name)
    weighted = build_problem(graph, table, options, {"max_avg_bits": 6}, routing_weight=True).layer(name)
    assert [o.distortion for o in weighted.options] == pytest.approx([o.distortion * freq[name] for o in plain.options])


def test_apply_quantizes_exactly_the_planned_expert_slice(tiny_hf):
    w = load_workload(str(tiny_hf["mixtral"]), calib=str(tiny_hf["calib"]))
    graph = discover(w)
    name = "model.layers.1.mlp.experts.gate_up_proj[2]"
    plan = plan_from_specs(graph, {name: QuantSpec(2, None)})
    plan = Plan.model_validate(json.loads(plan.model_dump_json(by_alias=True)))  # the name survives the document
    fused = w.model.get_parameter("model.layers.1.mlp.experts.gate_up_proj")
    before = fused.detach().clone()
    apply_plan(w.model, plan)
    assert not torch.equal(fused[2], before[2]) and all(len(torch.unique(r)) <= 4 for r in fused[2])
    for e in (0, 1, 3):
        assert torch.equal(fused[e], before[e])


def test_a_slice_the_model_does_not_have_is_named(tiny_hf):
    from mpq.errors import UnknownLayer

    w = load_workload(str(tiny_hf["mixtral"]), calib=str(tiny_hf["calib"]))
    plan = plan_from_specs(discover(w), {"model.layers.0.mlp.experts.gate_up_proj[0]": QuantSpec(4, None)})
    bad = plan.model_copy(update={"layers": [plan.layers[0].model_copy(update={"name": "model.layers.0.mlp.experts.gate_up_proj[9]"})]})
    with pytest.raises(UnknownLayer, match=r"gate_up_proj\[9\]"):
        apply_plan(w.model, bad)


def test_expert_views_follow_the_model_across_dtype_moves(tiny_hf):
    w = load_workload(str(tiny_hf["mixtral"]), calib=str(tiny_hf["calib"]))
    graph = discover(w)
    w.model.to(torch.float64)
    proj = graph.module("model.layers.0.mlp.experts.down_proj[1]")
    fused = w.model.get_parameter("model.layers.0.mlp.experts.down_proj")
    assert proj.weight.dtype == torch.float64 and proj.weight.data_ptr() == fused[1].data_ptr()
    w.model.to(torch.float32)


def test_exporters_refuse_a_fused_expert_slice_by_name(tiny_hf):
    from mpq.errors import ExportError
    from mpq.export.base import Support, check_support

    w = load_workload(str(tiny_hf["mixtral"]), calib=str(tiny_hf["calib"]))
    plan = plan_from_specs(discover(w), {"model.layers.0.mlp.experts.down_proj[3]": QuantSpec(4, None)})
    with pytest.raises(ExportError, match=r"down_proj\[3\].*expert 3 of the fused tensor"):
        check_support(plan, "some-target", Support(bits=frozenset({4})))


class _OldLayoutMoE(torch.nn.Module):
    """The older per-expert layout: a router and one nn.Linear pair per expert (``experts.3.w1``), top-1 routing."""

    def __init__(self, n: int = 4, d: int = 8):
        super().__init__()
        self.router = torch.nn.Linear(d, n, bias=False)
        self.experts = torch.nn.ModuleList(
            torch.nn.ModuleDict({"w1": torch.nn.Linear(d, 2 * d), "w2": torch.nn.Linear(2 * d, d)}) for _ in range(n)
        )
        self.head = torch.nn.Linear(d, 3)

    def forward(self, x):
        top = self.router(x).argmax(-1)
        out = torch.zeros_like(x)
        for e, ex in enumerate(self.experts):
            rows = top == e
            if rows.any():
                out[rows] = ex["w2"](torch.relu(ex["w1"](x[rows])))
        return self.head(out)


def test_per_expert_linear_layout_gets_routing_frequencies_too():
    from mpq.experts import routing_frequency
    from mpq.workload import Workload

    torch.manual_seed(0)
    model = _OldLayoutMoE()
    batches = [(torch.randn(32, 8), torch.randint(0, 3, (32,))) for _ in range(2)]
    w = Workload(model, batches, torch.nn.functional.cross_entropy)
    graph = discover(w)
    freq = routing_frequency(model, {n: graph.module(n) for n in graph.names}, batches)
    assert set(freq) == {f"experts.{e}.{k}" for e in range(4) for k in ("w1", "w2")}
    assert sum(freq[f"experts.{e}.w1"] for e in range(4)) == pytest.approx(1.0)  # top-1: every row goes to one expert
