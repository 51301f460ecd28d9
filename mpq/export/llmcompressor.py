"""LLM Compressor: a recipe YAML whose ``config_groups`` list exact module names, plus the
compressed-tensors ``QuantizationConfig`` JSON the recipe produces.

compressed-tensors resolves a module's scheme by its targets: an exact module name beats ``re:``
regexes (which are tried in alphabetical order) and class names. Every target here is an exact
name, so each planned layer has exactly one group. Layers kept in float go to ``ignore``. Float
formats map to compressed-tensors' schemes: ``fp8_e4m3`` with one block per row (a plan made with
``--target``) is FP8 per channel, with 32-element blocks it is MXFP8; ``fp4_e2m1`` is MXFP4 (32-element
blocks with power-of-two uint8 scales, as mpq quantizes them); ``nvfp4`` is NVFP4A16. fp8 e5m2 has no
compressed-tensors scheme. Activations with ``a_bits`` are static per-tensor asymmetric integers,
calibrated as mpq does. vLLM fuses q/k/v and gate/up into one module with one scheme, so planning
for this target ties them (see :mod:`mpq.export.vllm` for the schemes vLLM runs).
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
from .base import Export, ExportFile, Exporter, Support, in_features, is_float, to_json

#: Modules vLLM fuses (QKVParallelLinear, MergedColumnParallelLinear): one scheme each.
VLLM_FUSED = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"))
NVFP4_WEIGHTS = {"num_bits": 4, "type": "float", "symmetric": True, "group_size": 16, "strategy": "tensor_group",
                 "dynamic": False, "scale_dtype": "torch.float8_e4m3fn"}


def weight_args(layer: PlanLayer) -> dict:
    if layer.format == "nvfp4":
        return dict(NVFP4_WEIGHTS)
    if layer.format == "fp8_e4m3" and layer.group_size is not None and layer.group_size == in_features(layer):
        return {"num_bits": 8, "type": "float", "symmetric": True, "strategy": "channel", "dynamic": False}
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


def fused_mismatches(plan: Plan, fused: tuple[tuple[str, ...], ...]) -> list[str]:
    """Fused sibling modules (same parent) that the plan gives different options, as readable strings."""
    by_parent: dict[tuple[str, int], list] = {}
    for l in plan.layers:
        parent, _, leaf = l.name.rpartition(".")
        for i, group in enumerate(fused):
            if leaf in group:
                by_parent.setdefault((parent, i), []).append(l)
    return [", ".join(f"{l.name}={l.option}" for l in ls) for ls in by_parent.values() if len({l.option for l in ls}) > 1]


def fp8_channel_spec(name, shape, spec):
    """fp8 without a block size is FP8 per output channel here: one block per row (compressed-tensors' channel strategy)."""
    if spec.format == "fp8_e4m3" and spec.group_size is None:
        k = 1
        for s in shape[1:]:
            k *= s
        return spec.model_copy(update={"group_size": k})
    return spec


def recipe_export(name: str, plan: Plan) -> Export:
    """The recipe and quantization config: one config group per distinct scheme, exact module names."""
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
    return Export(name, files, {"recipe": recipe, "quantization_config": qconfig}, notes)


@register_exporter
class LLMCompressorExporter(Exporter):
    """An LLM Compressor ``QuantizationModifier`` recipe and the compressed-tensors config it yields."""

    name = "llmcompressor"
    support = Support(
        bits=frozenset(range(2, 9)), formats=frozenset({"int", "float", "fp8_e4m3", "fp4_e2m1", "nvfp4"}),
        a_bits=frozenset({4, 8}), embeddings=False, kv_cache=True, fused=VLLM_FUSED, sizes="compressed-tensors",
        presets={"w4a16": {"bits": [4, 8, 16], "group_sizes": [128]},
                 "mixed": {"bits": [2, 3, 4, 8, 16], "group_sizes": [128]},
                 "w8a8": {"bits": [8, 16], "group_sizes": [None], "a_bits": [8]},
                 "fp8": {"bits": [8, 16], "formats": ["fp8_e4m3"]},
                 "mxfp4": {"bits": [4, 8, 16], "formats": ["fp4_e2m1", "fp8_e4m3"], "group_sizes": [32]},
                 "nvfp4": {"bits": [4, 16], "formats": ["nvfp4"]}},
        default_preset="w4a16",
    )

    @classmethod
    def plan_spec(cls, name, shape, spec):
        return fp8_channel_spec(name, shape, spec)

    def check(self, plan: Plan) -> None:
        bad = [l.name for l in plan.layers if l.format in ("fp8_e4m3", "fp4_e2m1")
               and l.group_size not in (None, 32) and not (l.format == "fp8_e4m3" and l.group_size == in_features(l))]
        bad += [l.name for l in plan.layers if l.format == "nvfp4" and l.group_size not in (None, 16)]
        if bad:
            raise ExportError(f"cannot export this plan to llmcompressor: MX float schemes use 32-element blocks (NVFP4 16), "
                              f"but {', '.join(bad)} use another block size\n    -> re-plan float formats with --group-sizes none or 32")
        kv = {l.name: l.option for l in plan.layers if is_kv_cache(l.name)}
        if len(set(kv.values())) > 1:
            raise ExportError("cannot export this plan to llmcompressor: kv_cache_scheme is one scheme for the whole model, "
                              f"but the plan gives the KV cache {', '.join(f'{n} {o}' for n, o in kv.items())}\n"
                              "    -> re-plan with one --kv-bits value")
        kv = {l.name: l.option for l in plan.layers if is_kv_cache(l.name)}
        if len(set(kv.values())) > 1:
            raise ExportError("cannot export this plan to llmcompressor: kv_cache_scheme is one scheme for the whole model, "
                              f"but the plan gives the KV cache {', '.join(f'{n} {o}' for n, o in kv.items())}\n"
                              "    -> re-plan with one --kv-bits value")

    def build(self, plan: Plan) -> Export:
        result = recipe_export(self.name, plan)
        mixed = fused_mismatches(plan, self.support.fused)
        if mixed:
            result.notes.append("vLLM fuses these modules and refuses different schemes inside one: " + "; ".join(mixed[:4])
                                + " (plan with --target llmcompressor or --target vllm to tie them)")
        return result
