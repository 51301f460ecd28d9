"""torchao: an ``FqnToConfig`` in the JSON form of ``torchao.core.config.config_to_dict``.

``quantize_(model, config_from_dict(json.load(f)))`` applies it. torchao looks a module's fully
qualified name up exactly first, then tries ``re:`` keys with ``re.fullmatch``; every key here is
an exact name, and a layer kept in float maps to ``null`` (left as is). Integer layers of 1-8 bits
become ``IntxWeightOnlyConfig`` (per-group or per-output-channel, symmetric or asymmetric), which
also quantizes embeddings; with ``a_bits=8`` they become ``Int8DynamicActivationIntxWeightConfig``,
whose activations are quantized dynamically per token rather than over a calibrated range.
"""
from __future__ import annotations

from ..schema import Plan, PlanLayer
from . import register_exporter
from .base import Export, ExportFile, Exporter, Support, is_float, to_json


def _enum(type_name: str, value: str) -> dict:
    return {"_type": type_name, "_data": value}


def _granularity(group_size) -> dict:
    if group_size is None:
        return {"_type": "PerAxis", "_version": 1, "_data": {"axis": 0}}
    return {"_type": "PerGroup", "_version": 1, "_data": {"group_size": group_size}}


def layer_config(layer: PlanLayer) -> dict | None:
    if is_float(layer):
        return None
    dtype = {"_type": "torch.dtype", "_data": f"int{layer.w_bits}"}
    mapping = _enum("MappingType", "SYMMETRIC" if layer.symmetric else "ASYMMETRIC")
    common = {"intx_packing_format": _enum("IntxPackingFormat", "UNPACKED_TO_INT8"),
              "intx_choose_qparams_algorithm": _enum("IntxChooseQParamsAlgorithm", "AFFINE")}
    if layer.a_bits == 8:
        return {"_type": "Int8DynamicActivationIntxWeightConfig", "_version": 2, "_data": {
            "weight_dtype": dtype, "weight_granularity": _granularity(layer.group_size), "weight_mapping_type": mapping,
            "weight_scale_dtype": None, "act_mapping_type": _enum("MappingType", "ASYMMETRIC"), **common}}
    return {"_type": "IntxWeightOnlyConfig", "_version": 2, "_data": {
        "weight_dtype": dtype, "granularity": _granularity(layer.group_size), "mapping_type": mapping, "scale_dtype": None, **common}}


@register_exporter
class TorchAOExporter(Exporter):
    """``FqnToConfig`` with one exact fully qualified name per planned layer, as ``config_to_dict`` JSON."""

    name = "torchao"
    support = Support(bits=frozenset(range(1, 9)), a_bits=frozenset({8}), embeddings=True, groups_divide_inputs=True)

    def build(self, plan: Plan) -> Export:
        fqn_to_config = {l.name: layer_config(l) for l in plan.layers}
        config = {"_type": "FqnToConfig", "_version": 1, "_data": {"fqn_to_config": fqn_to_config}}
        notes = [f"{len(fqn_to_config)} exact FQNs ({sum(v is None for v in fqn_to_config.values())} kept in float)",
                 "use: quantize_(model, config_from_dict(json.load(open(FILE))), filter_fn=None)"]
        if any(l.a_bits for l in plan.layers):
            notes.append("torchao quantizes 8-bit activations dynamically per token, not over mpq's calibrated per-tensor range")
        return Export(self.name, [ExportFile(".json", to_json(config))], config, notes)
