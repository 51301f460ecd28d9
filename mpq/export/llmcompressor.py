"""LLM Compressor: a recipe YAML whose ``config_groups`` list exact module names, plus the
compressed-tensors ``QuantizationConfig`` JSON the recipe produces.

compressed-tensors resolves a module's scheme by its targets: an exact module name beats ``re:``
regexes (which are tried in alphabetical order) and class names. Every target here is an exact
name, so each planned layer has exactly one group. Layers kept in float go to ``ignore``. Float
formats map to the MX schemes (``fp8_e4m3`` -> MXFP8, ``fp4_e2m1`` -> MXFP4: 32-element blocks with
power-of-two uint8 scales, as mpq quantizes them); fp8 e5m2 has no compressed-tensors scheme.
Activations with ``a_bits`` are static per-tensor asymmetric integers, calibrated as mpq does.
Planned KV-cache bits (``<attention>.kv_cache`` entries) become the modifier's ``kv_cache_scheme``
(static per-tensor symmetric integers, as mpq measured them); it is one scheme for the whole
model, so a plan with different KV bits per layer is refused.
"""
from __future__ import annotations

import yaml

from ..errors import ExportError
from ..kv_cache import is_kv_cache
from ..schema import Plan, PlanLayer
from . import register_exporter
from .base import Export, ExportFile, Exporter, Support, is_float, to_json


def weight_args(layer: PlanLayer) -> dict:
    if layer.format in ("fp8_e4m3", "fp4_e2m1"):
        return {"num_bits": layer.w_bits, "type": "float", "symmetric": True, "group_size": 32, "strategy": "group",
                "dynamic": False, "scale_dtype": "torch.uint8", "zp_dtype": "torch.uint8"}
    args = {"num_bits": layer.w_bits, "type": "int", "symmetric": layer.symmetric, "dynamic": False}
    if layer.group_size is None:
        args["strategy"] = "channel"
    else:
        args.update(strategy="group", group_size=layer.group_size)
    return args


def activation_args(layer: PlanLayer) -> dict | None:
    if layer.a_bits is None:
        return None
    return {"num_bits": layer.a_bits, "type": "int", "symmetric": False, "strategy": "tensor", "dynamic": False}


@register_exporter
class LLMCompressorExporter(Exporter):
    """An LLM Compressor ``QuantizationModifier`` recipe and the compressed-tensors config it yields."""

    name = "llmcompressor"
    support = Support(
        bits=frozenset(range(2, 9)), formats=frozenset({"int", "float", "fp8_e4m3", "fp4_e2m1"}),
        a_bits=frozenset({4, 8}), embeddings=False, kv_cache=True,
    )

    def check(self, plan: Plan) -> None:
        bad = [l.name for l in plan.layers if l.format.startswith("fp") and l.group_size not in (None, 32)]
        if bad:
            raise ExportError(f"cannot export this plan to llmcompressor: MX float schemes use 32-element blocks, "
                              f"but {', '.join(bad)} use another block size\n    -> re-plan float formats with --group-sizes none or 32")
        kv = {l.name: l.option for l in plan.layers if is_kv_cache(l.name)}
        if len(set(kv.values())) > 1:
            raise ExportError("cannot export this plan to llmcompressor: kv_cache_scheme is one scheme for the whole model, "
                              f"but the plan gives the KV cache {', '.join(f'{n} {o}' for n, o in kv.items())}\n"
                              "    -> re-plan with one --kv-bits value")

    def build(self, plan: Plan) -> Export:
        groups: dict[tuple, dict] = {}
        for l in plan.layers:
            if is_float(l) or is_kv_cache(l.name):
                continue
            w, a = weight_args(l), activation_args(l)
            key = (tuple(sorted(w.items())), tuple(sorted(a.items())) if a else None)
            group = groups.setdefault(key, {"targets": [], "weights": w, **({"input_activations": a} if a else {})})
            group["targets"].append(l.name)
        config_groups = {f"group_{i}": g for i, g in enumerate(groups.values())}
        ignore = [l.name for l in plan.layers if is_float(l) and not is_kv_cache(l.name)]
        modifier = {"config_groups": config_groups, "ignore": ignore}
        kv_bits = {l.w_bits for l in plan.layers if is_kv_cache(l.name)}
        if kv_bits and min(kv_bits) < 16:
            modifier["kv_cache_scheme"] = {"num_bits": min(kv_bits), "type": "int", "symmetric": True, "strategy": "tensor", "dynamic": False}
        recipe = {"quant_stage": {"quant_modifiers": {"QuantizationModifier": modifier}}}
        qconfig = {"quant_method": "compressed-tensors", "config_groups": config_groups, "ignore": ignore}
        if "kv_cache_scheme" in modifier:
            qconfig["kv_cache_scheme"] = modifier["kv_cache_scheme"]
        notes = [f"{len(config_groups)} config groups of exact module names; {len(ignore)} layers in ignore (float)",
                 "recipe: oneshot(model=..., recipe=FILE); the .quantization_config.json is what the saved model's config carries"]
        files = [ExportFile(".recipe.yaml", yaml.safe_dump(recipe, sort_keys=False)),
                 ExportFile(".quantization_config.json", to_json(qconfig))]
        return Export(self.name, files, {"recipe": recipe, "quantization_config": qconfig}, notes)
