"""NVIDIA ModelOpt: a ``mtq.quantize`` config whose ``quant_cfg`` names every planned layer's quantizers.

ModelOpt's ``quant_cfg`` is an ordered list of ``{"quantizer_name": PATTERN, "cfg": {...}}`` or
``{"quantizer_name": PATTERN, "enable": false}`` entries; each pattern is matched with ``fnmatch``
against quantizer module names (``model.layers.0.self_attn.q_proj.weight_quantizer``) and later
entries override earlier ones. The config here disables every quantizer first, then enables each
planned layer's weight quantizer by its exact name: int4/int8 symmetric per block (``block_sizes``)
or per channel (``axis: 0``), fp8 e4m3 per channel, NVFP4 (e2m1 with fp8 scales per 16). Activations
stay in 16 bits (ModelOpt calibrates its own activation ranges; plan weight-only for this target).
The file is YAML because ``block_sizes`` keys are integers (``-1``), which JSON cannot carry.
"""
from __future__ import annotations

import yaml

from ..schema import Plan, PlanLayer
from . import register_exporter
from .base import Export, ExportFile, Exporter, Support, in_features, is_float
from .llmcompressor import fp8_channel_spec


def weight_cfg(layer: PlanLayer) -> dict:
    if layer.format == "nvfp4":
        return {"num_bits": [2, 1], "block_sizes": {-1: 16, "type": "dynamic", "scale_bits": [4, 3]}}
    if layer.format == "fp8_e4m3":
        return {"num_bits": [4, 3], "axis": 0}
    if layer.group_size is None:
        return {"num_bits": layer.w_bits, "axis": 0}
    return {"num_bits": layer.w_bits, "block_sizes": {-1: layer.group_size, "type": "static"}}


@register_exporter
class ModelOptExporter(Exporter):
    """ModelOpt ``mtq.quantize(model, config, forward_loop)`` config with one exact entry per planned layer."""

    name = "modelopt"
    support = Support(
        bits=frozenset({4, 8}), formats=frozenset({"int", "float", "fp8_e4m3", "nvfp4"}), asymmetric=False,
        embeddings=False, lm_head=False, groups_divide_inputs=True, sizes="modelopt",
        presets={"int4_awq": {"bits": [4, 8, 16], "group_sizes": [128]},
                 "int8": {"bits": [8, 16]},
                 "fp8": {"bits": [8, 16], "formats": ["fp8_e4m3"]},
                 "nvfp4": {"bits": [4, 8, 16], "formats": ["nvfp4", "fp8_e4m3"]}},
        default_preset="int4_awq",
    )

    @classmethod
    def plan_spec(cls, name, shape, spec):
        spec = fp8_channel_spec(name, shape, spec)
        if spec.format == "nvfp4" and spec.group_size not in (None, 16):
            return None
        return spec

    def check(self, plan: Plan) -> None:
        from ..errors import ExportError

        bad = [f"{l.name} ({l.option})" for l in plan.layers
               if (l.format == "fp8_e4m3" and l.group_size not in (None, in_features(l))) or (l.format == "nvfp4" and l.group_size not in (None, 16))]
        if bad:
            raise ExportError("cannot export this plan to modelopt: fp8 is per output channel and NVFP4 uses 16-element blocks: "
                              + ", ".join(bad[:6]) + "\n    -> re-plan with --target modelopt")

    def build(self, plan: Plan) -> Export:
        quant_cfg: list[dict] = [{"quantizer_name": "*", "enable": False}]
        for l in plan.layers:
            if not is_float(l):
                quant_cfg.append({"quantizer_name": f"{l.name}.weight_quantizer", "cfg": weight_cfg(l)})
        config = {"quant_cfg": quant_cfg, "algorithm": "max"}
        notes = [f"{len(quant_cfg) - 1} exact weight quantizers enabled; every other quantizer disabled",
                 "use: mtq.quantize(model, yaml.safe_load(open(FILE)), forward_loop) (int block_sizes keys need YAML, not JSON)"]
        return Export(self.name, [ExportFile(".yaml", yaml.safe_dump(config, sort_keys=False))], config, notes)
