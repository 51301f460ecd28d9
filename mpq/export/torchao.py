"""torchao: an ``FqnToConfig`` in the JSON form of ``torchao.core.config.config_to_dict``.

``quantize_(model, config_from_dict(json.load(f)))`` applies it. torchao looks a module's fully
qualified name up exactly first, then tries ``re:`` keys with ``re.fullmatch``; every key here is
an exact name, and a layer kept in float maps to ``null`` (left as is). Each layer takes the
config that stores it most compactly (:func:`mpq.sizes.torchao_layout`):

- 4 bits in groups of 32-256: ``Int4WeightOnlyConfig``, packed two weights per byte with a bf16
  scale and zero per group (the tile-packed layout tinygemm runs on CUDA; the model must be bf16);
- 8 bits, symmetric: ``Int8WeightOnlyConfig`` (per row or per group);
- fp8 e4m3 per output channel: ``Float8WeightOnlyConfig`` (per row);
- any other 1-8 bit integer layer, and embeddings: ``IntxWeightOnlyConfig``, which stores one
  weight per int8 (so 3 bits cost 8: plan with ``--target torchao`` to count that);
- ``a_bits=8``: ``Int8DynamicActivationIntxWeightConfig``, whose activations are quantized
  dynamically per token rather than over a calibrated range.
"""
from __future__ import annotations


from ..errors import ExportError
from ..schema import Plan, PlanLayer
from ..sizes import torchao_layout
from . import register_exporter
from .base import Export, ExportFile, Exporter, Support, in_features, is_embedding, is_float, to_json


def _enum(type_name: str, value: str) -> dict:
    return {"_type": type_name, "_data": value}


def _granularity(group_size) -> dict:
    if group_size is None:
        return {"_type": "PerAxis", "_version": 1, "_data": {"axis": 0}}
    return {"_type": "PerGroup", "_version": 1, "_data": {"group_size": group_size}}


def _row_or_group(group_size) -> dict:
    if group_size is None:
        return {"_type": "PerRow", "_version": 1, "_data": {"dim": -1}}
    return _granularity(group_size)


def layout_of(layer: PlanLayer) -> str | None:
    return torchao_layout(layer.w_bits, layer.group_size, layer.format, layer.a_bits, in_features(layer) or 0,
                          is_embedding(layer.name), layer.symmetric)


def layer_config(layer: PlanLayer) -> dict | None:
    layout = layout_of(layer)
    if layout is None:
        return None
    if layout == "Int4WeightOnlyConfig":
        return {"_type": layout, "_version": 2, "_data": {
            "group_size": layer.group_size, "int4_packing_format": "tile_packed_to_4d",
            "int4_choose_qparams_algorithm": _enum("Int4ChooseQParamsAlgorithm", "TINYGEMM")}}
    if layout == "Int8WeightOnlyConfig":
        return {"_type": layout, "_version": 2, "_data": {"group_size": None, "granularity": _row_or_group(layer.group_size)}}
    if layout == "Float8WeightOnlyConfig":
        return {"_type": layout, "_version": 2, "_data": {
            "weight_dtype": {"_type": "torch.dtype", "_data": "float8_e4m3fn"}, "granularity": _row_or_group(None)}}
    dtype = {"_type": "torch.dtype", "_data": f"int{layer.w_bits}"}
    mapping = _enum("MappingType", "SYMMETRIC" if layer.symmetric else "ASYMMETRIC")
    common = {"intx_packing_format": _enum("IntxPackingFormat", "UNPACKED_TO_INT8"),
              "intx_choose_qparams_algorithm": _enum("IntxChooseQParamsAlgorithm", "AFFINE")}
    if layout == "Int8DynamicActivationIntxWeightConfig":
        return {"_type": layout, "_version": 2, "_data": {
            "weight_dtype": dtype, "weight_granularity": _granularity(layer.group_size), "weight_mapping_type": mapping,
            "weight_scale_dtype": None, "act_mapping_type": _enum("MappingType", "ASYMMETRIC"), **common}}
    return {"_type": "IntxWeightOnlyConfig", "_version": 2, "_data": {
        "weight_dtype": dtype, "granularity": _granularity(layer.group_size), "mapping_type": mapping, "scale_dtype": None, **common}}


@register_exporter
class TorchAOExporter(Exporter):
    """``FqnToConfig`` with one exact fully qualified name per planned layer, as ``config_to_dict`` JSON."""

    name = "torchao"
    support = Support(
        bits=frozenset(range(1, 9)), formats=frozenset({"int", "float", "fp8_e4m3"}), a_bits=frozenset({8}), embeddings=True,
        groups_divide_inputs=True, sizes="torchao",
        presets={"int4wo": {"bits": [4, 8, 16], "group_sizes": [128]},
                 "int8wo": {"bits": [8, 16]},
                 "fp8wo": {"bits": [8, 16], "formats": ["fp8_e4m3"]},
                 "mixed": {"bits": [4, 8, 16], "group_sizes": [32, 128], "formats": ["int", "fp8_e4m3"]}},
        default_preset="int4wo",
    )

    @classmethod
    def plan_spec(cls, name, shape, spec):
        """fp8 is per output channel (one block per row); layers with no torchao config have no option."""
        k = 1
        for s in shape[1:]:
            k *= s
        if spec.format == "fp8_e4m3":
            spec = spec.model_copy(update={"group_size": k})
        layout = torchao_layout(spec.w_bits, spec.group_size, spec.format, spec.a_bits, k, is_embedding(name), spec.symmetric)
        return None if layout == "" else spec

    def check(self, plan: Plan) -> None:
        bad = [f"{l.name} ({l.option})" for l in plan.layers if layout_of(l) == ""]
        if bad:
            raise ExportError("cannot export this plan to torchao: no torchao config stores " + ", ".join(bad[:6])
                              + "\n    -> fp8 is weight-only per output channel (Float8WeightOnlyConfig) and embeddings take "
                              "integer IntxWeightOnlyConfig; re-plan with --target torchao")

    def build(self, plan: Plan) -> Export:
        fqn_to_config = {l.name: layer_config(l) for l in plan.layers}
        config = {"_type": "FqnToConfig", "_version": 1, "_data": {"fqn_to_config": fqn_to_config}}
        counts: dict[str, int] = {}
        for c in fqn_to_config.values():
            key = "float" if c is None else c["_type"]
            counts[key] = counts.get(key, 0) + 1
        notes = [f"{len(fqn_to_config)} exact FQNs: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())),
                 "use: quantize_(model, config_from_dict(json.load(open(FILE))), filter_fn=None)"]
        if "Int4WeightOnlyConfig" in counts:
            notes.append("Int4WeightOnlyConfig packs with tinygemm's tile layout: quantize a bf16 model on CUDA")
        if any(l.a_bits for l in plan.layers):
            notes.append("torchao quantizes 8-bit activations dynamically per token, not over mpq's calibrated per-tensor range")
        return Export(self.name, [ExportFile(".json", to_json(config))], config, notes)
