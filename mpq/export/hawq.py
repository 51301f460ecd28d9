"""HAWQ: a ``bit_config`` dict, layer name -> weight bits, as HAWQ-V3's ``bit_config.py`` holds them.

HAWQ looks each quantized module up by its exact name. Its quantizers are symmetric, per output
channel, integer; a layer kept in float is written as 16 (no HAWQ quantizer takes 16 bits, so the
layer should be left unquantized). Activation bits go in ``<layer>.quant_act`` entries, the key
HAWQ-V3 gives the activation quantizer in front of a layer.
"""
from __future__ import annotations

from ..schema import Plan
from . import register_exporter
from .base import Export, ExportFile, Exporter, Support, is_float, to_json

BIT_CONFIG_NAME = "bit_config_mpq"


@register_exporter
class HAWQExporter(Exporter):
    """HAWQ-V3 ``bit_config_dict`` entry: exact layer names to weight bits (and ``.quant_act`` activation bits)."""

    name = "hawq"
    support = Support(bits=frozenset(range(2, 9)), group_sizes=frozenset({None}), asymmetric=False,
                      a_bits=frozenset(range(2, 17)), embeddings=True, sizes="mpq",
                      presets={"mixed": {"bits": [2, 3, 4, 5, 6, 8, 16]}, "w4a8": {"bits": [4, 8, 16], "a_bits": [8]}},
                      default_preset="mixed")

    def build(self, plan: Plan) -> Export:
        bits: dict[str, int] = {}
        for l in plan.layers:
            bits[l.name] = 16 if is_float(l) else l.w_bits
            if l.a_bits is not None:
                bits[f"{l.name}.quant_act"] = l.a_bits
        data = {BIT_CONFIG_NAME: bits}
        notes = [f"{len(plan.layers)} layers; float layers are written as 16 bits (leave them unquantized)",
                 f"use: bit_config_dict.update(json.load(open(FILE))) and --quant-scheme {BIT_CONFIG_NAME}"]
        return Export(self.name, [ExportFile(".json", to_json(data))], data, notes)
