"""AutoRound: ``AutoRound(model, ..., layer_config=...)`` with one entry per planned layer, by exact name.

AutoRound takes a ``layer_config`` key that is a supported module's exact name as is; any other
key becomes a regex (dots escaped for you) matched with ``re.search``, and an entry naming a module
it cannot quantize (an embedding) is dropped with a warning, so quantized embeddings are refused
here. Every planned layer gets its own exact entry; layers kept in float get ``bits: 16``.
"""
from __future__ import annotations

from ..schema import Plan, PlanLayer
from . import register_exporter
from .base import Export, ExportFile, Exporter, Support, is_float, most_common, to_json


def layer_entry(layer: PlanLayer) -> dict:
    if is_float(layer):
        return {"bits": 16, "data_type": "float"}
    entry = {"bits": layer.w_bits, "group_size": -1 if layer.group_size is None else layer.group_size,
             "sym": layer.symmetric, "data_type": "int"}
    if layer.a_bits is not None:
        entry.update(act_bits=layer.a_bits, act_dynamic=False)
    return entry


@register_exporter
class AutoRoundExporter(Exporter):
    """AutoRound keyword arguments: the default scheme plus an exact ``layer_config`` for every layer."""

    name = "autoround"
    support = Support(bits=frozenset(range(2, 9)), a_bits=frozenset({4, 8}))

    def build(self, plan: Plan) -> Export:
        layer_config = {l.name: layer_entry(l) for l in plan.layers}
        quantized = [layer_config[l.name] for l in plan.layers if not is_float(l)]
        base = dict(most_common(tuple(sorted(e.items())) for e in quantized)) if quantized else {"bits": 16, "data_type": "float"}
        config = {"bits": base["bits"], "group_size": base.get("group_size", -1), "sym": base.get("sym", True),
                  "quant_lm_head": any(l.name == "lm_head" and not is_float(l) for l in plan.layers),
                  "layer_config": layer_config}
        notes = [f"{len(layer_config)} exact layer_config entries ({sum(is_float(l) for l in plan.layers)} kept in float at 16 bits)",
                 "use: AutoRound(model, tokenizer, **json.load(open(FILE)))"]
        return Export(self.name, [ExportFile(".json", to_json(config))], config, notes)
