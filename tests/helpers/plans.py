"""Plans built directly from chosen options (no estimator, no solver): the fixtures of apply and export tests."""
from __future__ import annotations

from typing import Mapping

from mpq.cost import option_for, option_id
from mpq.graph import LayerGraph
from mpq.plan import build_plan
from mpq.quant import QuantSpec
from mpq.schema import Constraints, Plan, Problem, ProblemLayer, SolverInfo


def plan_from_specs(graph: LayerGraph, specs: Mapping[str, QuantSpec]) -> Plan:
    """The plan giving each named layer its spec (layers not named are left out of the plan)."""
    layers = []
    for name, spec in specs.items():
        info = graph.layers[name]
        opt = option_for(info.shape, info.macs, spec, 0.0, option_id(spec))
        layers.append(ProblemLayer(name=name, params=info.params, macs=info.macs, shape=list(info.shape), options=[opt]))
    problem = Problem(layers=layers, constraints=Constraints(max_avg_bits=16))
    choice = {l.name: l.options[0].id for l in layers}
    return build_plan(problem, choice, SolverInfo(name="test", status="optimal", objective=0.0))


def llama_mixed_specs(n_layers: int = 2, *, per_channel_only: bool = False, vary_index: bool = False) -> dict[str, QuantSpec]:
    """Mixed bits and group sizes over the tiny Llama: embeddings in float, lm_head at 8 bits."""
    g = (lambda size: None) if per_channel_only else (lambda size: size)
    per_proj = {
        "self_attn.q_proj": QuantSpec(4, g(32)),
        "self_attn.k_proj": QuantSpec(8, None),
        "self_attn.v_proj": QuantSpec(8, g(64)),
        "self_attn.o_proj": QuantSpec(4, g(64), symmetric=per_channel_only),
        "mlp.gate_proj": QuantSpec(3, g(128)),
        "mlp.up_proj": QuantSpec(4, None),
        "mlp.down_proj": QuantSpec(2, g(128)),
    }
    specs = {"model.embed_tokens": QuantSpec(16, None, "float")}
    for i in range(n_layers):
        for proj, spec in per_proj.items():
            specs[f"model.layers.{i}.{proj}"] = spec
    if vary_index:
        specs["model.layers.1.self_attn.q_proj"] = QuantSpec(8, 128)
    specs["lm_head"] = QuantSpec(8, None)
    return specs
