"""OpenVINO NNCF: ``nncf.compress_weights`` passes, one per distinct setting, each limited to its layers.

``compress_weights`` takes one mode (``int4_sym``, ``int8_asym``, ...) and one group size per call,
and an ``IgnoredScope`` of NNCF graph node names to leave alone. A mixed plan is therefore a list
of passes: each pass compresses exactly its layers (``ratio=1.0``, ``all_layers=True``, so NNCF
neither keeps a share in a backup precision nor spares the first and last layers) and ignores the
rest. NNCF names a torch node by its call site (``model/self_attn/q_proj/linear/1``) and its weight
constant by the parameter's qualified name, so :func:`compress` resolves each planned module to
its node through that constant before every pass. Layers kept in float are in no pass.
"""
from __future__ import annotations

from typing import Any

from ..errors import ExportError
from ..schema import Plan, PlanLayer
from . import register_exporter
from .base import Export, ExportFile, Exporter, Support, is_float, to_json

#: (bits, symmetric) -> NNCF CompressWeightsMode value.
MODES = {(4, True): "int4_sym", (4, False): "int4_asym", (8, True): "int8_sym", (8, False): "int8_asym"}


def mode_of(layer: PlanLayer) -> str:
    return MODES[(layer.w_bits, layer.symmetric)]


@register_exporter
class NNCFExporter(Exporter):
    """``nncf.compress_weights`` passes (mode, group size, the planned layers) and the layers kept in float."""

    name = "nncf"
    support = Support(
        bits=frozenset({4, 8}), embeddings=False, lm_head=True, groups_divide_inputs=True, sizes="openvino",
        presets={"int4_sym": {"bits": [4, 8, 16], "group_sizes": [128]},
                 "int4_asym": {"bits": [4, 8, 16], "group_sizes": [128], "symmetric": [False]},
                 "int8": {"bits": [8, 16], "symmetric": [True, False]}},
        default_preset="int4_sym",
    )

    @classmethod
    def plan_spec(cls, name, shape, spec):
        return None if spec.w_bits == 8 and spec.group_size is not None else spec  # NNCF int8 is per channel

    def check(self, plan: Plan) -> None:
        bad = [f"{l.name} ({l.option})" for l in plan.layers if l.format == "int" and l.w_bits == 8 and l.group_size is not None]
        if bad:
            raise ExportError("cannot export this plan to nncf: NNCF compresses 8-bit weights per output channel, not in groups: "
                              + ", ".join(bad[:6]) + "\n    -> re-plan with --target nncf")

    def build(self, plan: Plan) -> Export:
        passes: dict[tuple, list[str]] = {}
        for l in plan.layers:
            if not is_float(l):
                passes.setdefault((mode_of(l), l.group_size), []).append(l.name)
        data = {"passes": [{"mode": m, "group_size": g, "ratio": 1.0, "all_layers": True, "layers": names}
                           for (m, g), names in passes.items()],
                "float": [l.name for l in plan.layers if is_float(l)]}
        notes = [f"{len(data['passes'])} compress_weights passes; {len(data['float'])} layers left in float",
                 "use: mpq.export.nncf.compress(model, json.load(open(FILE)), example_input)"]
        return Export(self.name, [ExportFile(".json", to_json(data))], data, notes)


def node_names(model: Any, example_input: Any) -> dict[str, str]:
    """NNCF graph node name of each weighted module, keyed by the module's qualified name."""
    from nncf.torch.function_hook.nncf_graph.nncf_graph_builder import build_nncf_graph

    graph = build_nncf_graph(model, example_input)
    out: dict[str, str] = {}
    for node in graph.get_all_nodes():
        for edge in graph.get_input_edges(node):
            const = edge.from_node.node_name
            if edge.from_node.node_type == "nncf_model_const" and const.endswith(".weight"):
                out[const[: -len(".weight")]] = node.node_name
    return out


def compress(model: Any, config: dict, example_input: Any) -> Any:
    """Apply an export of this target to a torch model with NNCF: one ``compress_weights`` per pass."""
    import nncf

    dataset = nncf.Dataset([example_input])
    for p in config["passes"]:
        nodes = node_names(model, example_input)
        missing = [n for n in p["layers"] if n not in nodes]
        if missing:
            raise ExportError(f"nncf: the model has no weighted node for {', '.join(missing[:6])}")
        keep = set(p["layers"])
        int4 = p["mode"].startswith("int4")
        ignored = [node for name, node in nodes.items() if name not in keep]
        model = nncf.compress_weights(
            model, mode=nncf.CompressWeightsMode(p["mode"]), group_size=(p["group_size"] or -1) if int4 else None,  # -1: per channel
            ratio=p["ratio"] if int4 else None, all_layers=p["all_layers"] if int4 else None,
            dataset=dataset, ignored_scope=nncf.IgnoredScope(names=ignored, validate=False))
    return model
