"""Discover a model's quantizable layers and the data flow between them, as a networkx DiGraph."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional, Sequence

import networkx as nx
import torch
from torch import nn

from .errors import UnknownLayer, WorkloadError
from .experts import ExpertProjection, expert_layers
from .quant import weight_shape
from .workload import StepInputs, Workload, call_model

QUANTIZABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Embedding)


def is_quantizable(module: nn.Module) -> bool:
    if isinstance(module, QUANTIZABLE):
        return getattr(module, "weight", None) is not None
    # transformers' GPT-2 style Conv1D (a Linear with transposed weight); matched by name to keep transformers optional
    return type(module).__name__ == "Conv1D" and isinstance(getattr(module, "weight", None), torch.Tensor)


def layer_kind(module: nn.Module) -> str:
    return type(module).__name__


@dataclass
class LayerInfo:
    name: str
    kind: str
    shape: list[int]
    params: int
    macs: int = 0

    def as_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "shape": self.shape, "params": self.params, "macs": self.macs}


@dataclass
class LayerGraph:
    """Quantizable layers in execution order, plus a DiGraph whose edges follow the data flow."""

    model: nn.Module
    layers: dict[str, LayerInfo]
    graph: nx.DiGraph
    method: str = "fx"
    macs_per: str = "sample"
    _modules: dict[str, nn.Module] = field(default_factory=dict, repr=False)

    def __iter__(self) -> Iterator[LayerInfo]:
        return iter(self.layers.values())

    def __len__(self) -> int:
        return len(self.layers)

    @property
    def names(self) -> list[str]:
        return list(self.layers)

    def module(self, name: str) -> nn.Module:
        try:
            return self._modules[name]
        except KeyError:
            raise UnknownLayer(f"layer {name!r} is not a quantizable layer of this model") from None

    def adjacent_pairs(self) -> list[tuple[str, str]]:
        return [(a, b) for a, b in self.graph.edges]


def _batch_size(inputs: Any) -> int:
    if isinstance(inputs, StepInputs):
        inputs = inputs.batch
    if isinstance(inputs, torch.Tensor):
        return int(inputs.shape[0]) if inputs.dim() else 1
    values = inputs.values() if isinstance(inputs, dict) else inputs if isinstance(inputs, (tuple, list)) else []
    for v in values:
        if isinstance(v, torch.Tensor) and v.dim():
            return int(v.shape[0])
    return 1


def _macs(module: nn.Module, output: Any) -> int:
    if not isinstance(output, torch.Tensor):
        return 0
    if isinstance(module, nn.Embedding):
        return 0
    if isinstance(module, nn.Linear):
        return output.numel() * module.in_features
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        taps = math.prod(module.kernel_size) * (module.in_channels // module.groups)
        return output.numel() * taps
    if type(module).__name__ == "Conv1D":
        return output.numel() * int(module.weight.shape[0])
    if isinstance(module, ExpertProjection):
        return output.numel() * int(module.weight.shape[1])
    return 0


def discover(workload: Workload | nn.Module, example_inputs: Any = None) -> LayerGraph:
    """Find every quantizable layer, measure its MACs in one forward pass, and link layers by data flow.

    Edges come from torch.fx when the model traces; otherwise layers are chained in the order
    their forward hooks fire. MACs are per sample of the first calibration batch. Each expert's slice
    of a fused 3-D expert tensor is a layer of its own (:mod:`mpq.experts`), e.g.
    ``model.layers.0.mlp.experts.gate_up_proj[3]``.
    """
    if isinstance(workload, Workload):
        model = workload.model
        example_inputs = workload.batches[0][0] if example_inputs is None else example_inputs
    else:
        model = workload
    modules: dict[str, nn.Module] = {}
    owners: set[int] = set()
    for name, m in model.named_modules():
        # a weight shared by two modules (tied embeddings and lm_head) is one tensor: planned once, under its first name
        if name and is_quantizable(m) and id(m.weight) not in owners:
            owners.add(id(m.weight))
            modules[name] = m
    modules.update(expert_layers(model))
    if not modules:
        raise WorkloadError(
            f"model {type(model).__name__} has no quantizable layer "
            "(looked for nn.Linear, nn.Conv1d/2d/3d, nn.Embedding and transformers' Conv1D)"
        )
    order: list[str] = []
    macs: dict[str, int] = {n: 0 for n in modules}
    handles = []

    def hook(name):
        def fn(mod, args, output):
            if name not in order:
                order.append(name)
            macs[name] += _macs(mod, output)

        return fn

    for n, m in modules.items():
        handles.append(m.register_forward_hook(hook(n)))
    per = 1
    try:
        if example_inputs is not None:
            per = _batch_size(example_inputs)
            with torch.no_grad():
                call_model(model, example_inputs)
    finally:
        for h in handles:
            h.remove()
    ordered = order + [n for n in modules if n not in order]
    layers = {
        n: LayerInfo(n, layer_kind(modules[n]), weight_shape(modules[n]), int(modules[n].weight.numel()), macs[n] // max(per, 1))
        for n in ordered
    }
    g = nx.DiGraph()
    for info in layers.values():
        g.add_node(info.name, **info.as_dict())
    edges, method = _fx_edges(model, set(modules))
    if edges is None:
        method = "hooks"
        traced = [n for n in order]
        edges = list(zip(traced, traced[1:]))
    g.add_edges_from(edges)
    return LayerGraph(model=model, layers=layers, graph=g, method=method, _modules=modules)


def _fx_edges(model: nn.Module, names: set[str]) -> tuple[Optional[list[tuple[str, str]]], str]:
    try:
        traced = torch.fx.symbolic_trace(model)
    except Exception:  # models with data-dependent control flow do not trace; hook order is the fallback
        return None, "hooks"
    edges: set[tuple[str, str]] = set()
    for node in traced.graph.nodes:
        if node.op == "call_module" and node.target in names:
            stack = list(node.all_input_nodes)
            seen = set()
            while stack:
                p = stack.pop()
                if p in seen:
                    continue
                seen.add(p)
                if p.op == "call_module" and p.target in names:
                    edges.add((p.target, node.target))
                else:
                    stack.extend(p.all_input_nodes)
    return sorted(edges), "fx"


def restrict(graph: LayerGraph, names: Sequence[str]) -> LayerGraph:
    """The same graph with only ``names`` planned (the others stay as they are, outside every budget)."""
    unknown = [n for n in names if n not in graph.layers]
    if unknown:
        raise UnknownLayer(f"layer {unknown[0]!r} is not a quantizable layer of the model (see `mpq layers`)")
    if not names:
        raise UnknownLayer("the list of layers to plan is empty")
    keep = [n for n in graph.names if n in set(names)]
    return LayerGraph(
        model=graph.model, layers={n: graph.layers[n] for n in keep}, graph=graph.graph.subgraph(keep).copy(),
        method=graph.method, macs_per=graph.macs_per, _modules={n: graph._modules[n] for n in keep},
    )
