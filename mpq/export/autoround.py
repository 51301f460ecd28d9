"""AutoRound: ``AutoRound(model, ..., layer_config=...)`` with one entry per planned layer, by exact name.

AutoRound takes a ``layer_config`` key that is a supported module's exact name as is; any other
key becomes a regex (dots escaped for you) matched with ``re.search``, and an entry naming a module
it cannot quantize (an embedding) is dropped with a warning, so quantized embeddings are refused
here. AutoRound also keeps in 16 bits every integer layer whose weight has a dimension that is
not a multiple of 32, whatever ``layer_config`` says; such layers are refused too (``dims_multiple``). Every planned
layer gets its own exact entry; layers kept in float get ``bits: 16``.
"""
from __future__ import annotations

from ..schema import Plan, PlanLayer
from . import register_exporter
from .base import Export, ExportFile, Exporter, Support, is_embedding, is_float, most_common, to_json


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
    support = Support(
        bits=frozenset(range(2, 9)), a_bits=frozenset({4, 8}), dims_multiple=32, sizes="autoround",
        presets={"mixed": {"bits": [2, 3, 4, 8, 16], "group_sizes": [128]},
                 "w4a16": {"bits": [4, 8, 16], "group_sizes": [128]}},
        default_preset="mixed",
    )

    def build(self, plan: Plan) -> Export:
        # a float embedding needs no entry: AutoRound never quantizes embeddings (and warns about such entries)
        layer_config = {l.name: layer_entry(l) for l in plan.layers if not (is_float(l) and is_embedding(l.name))}
        quantized = [layer_config[l.name] for l in plan.layers if not is_float(l)]
        base = dict(most_common(tuple(sorted(e.items())) for e in quantized)) if quantized else {"bits": 16, "data_type": "float"}
        config = {"bits": base["bits"], "group_size": base.get("group_size", -1), "sym": base.get("sym", True),
                  "quant_lm_head": any(l.name == "lm_head" and not is_float(l) for l in plan.layers),
                  "layer_config": layer_config}
        notes = [f"{len(layer_config)} exact layer_config entries ({sum(e['bits'] == 16 for e in layer_config.values())} kept in float at 16 bits)",
                 "use: AutoRound(model, tokenizer, **json.load(open(FILE)))"]
        return Export(self.name, [ExportFile(".json", to_json(config))], config, notes)
