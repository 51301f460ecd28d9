"""vLLM: the compressed-tensors checkpoint llm-compressor writes, restricted to the schemes vLLM runs.

vLLM's compressed-tensors loader has kernels for W4A16/W8A16 integers (``CompressedTensorsWNA16``:
4 or 8 bits, symmetric, per channel or groups of 32, 64 or 128), W8A8 int8 (channel weights),
FP8 per channel (``W8A16Fp8``/``W8A8Fp8``) and NVFP4 (``W4A16Fp4``). It fuses q/k/v into
``qkv_proj`` and gate/up into ``gate_up_proj`` and applies one scheme per fused module, so a plan
that gives them different options is refused; ``mpq plan --target vllm`` ties them. Embeddings
and ``lm_head`` stay in float. The files are the llm-compressor recipe and quantization config.
"""
from __future__ import annotations

from ..errors import ExportError
from ..schema import Plan
from . import register_exporter
from .base import Export, Exporter, Support
from .llmcompressor import VLLM_FUSED, fp8_channel_spec, fused_mismatches, recipe_export


@register_exporter
class VLLMExporter(Exporter):
    """An llm-compressor recipe and compressed-tensors config that vLLM loads, fused layers on one scheme."""

    name = "vllm"
    support = Support(
        bits=frozenset({4, 8}), group_sizes=frozenset({None, 32, 64, 128}), formats=frozenset({"int", "float", "fp8_e4m3", "nvfp4"}),
        asymmetric=False, a_bits=frozenset({8}), embeddings=False, lm_head=False, groups_divide_inputs=True,
        fused=VLLM_FUSED, sizes="compressed-tensors",
        presets={"w4a16": {"bits": [4, 8, 16], "group_sizes": [128]},
                 "w4a16-g32": {"bits": [4, 8, 16], "group_sizes": [32, 128]},
                 "w8a8": {"bits": [8, 16], "group_sizes": [None], "a_bits": [8]},
                 "fp8": {"bits": [8, 16], "formats": ["fp8_e4m3"]},
                 "nvfp4": {"bits": [4, 16], "formats": ["nvfp4"]}},
        default_preset="w4a16",
    )

    @classmethod
    def plan_spec(cls, name, shape, spec):
        spec = fp8_channel_spec(name, shape, spec)
        if spec.format == "fp8_e4m3" and spec.group_size is not None:
            k = 1
            for s in shape[1:]:
                k *= s
            if spec.group_size != k:
                return None  # vLLM runs FP8 per channel, not MX blocks
        if spec.format == "nvfp4" and spec.group_size not in (None, 16):
            return None
        if spec.a_bits is not None and not (spec.format == "int" and spec.w_bits == 8 and spec.group_size is None):
            return None  # W8A8 int8 has channel weights
        return spec

    def check(self, plan: Plan) -> None:
        bad = []
        for l in plan.layers:
            if l.format == "fp8_e4m3" and (l.shape is None or l.group_size != _k(l.shape)):
                bad.append(f"{l.name} (fp8 with {l.group_size or 32}-element blocks: vLLM runs FP8 per channel)")
            if l.a_bits is not None and not (l.format == "int" and l.w_bits == 8 and l.group_size is None):
                bad.append(f"{l.name} ({l.option}: vLLM quantizes activations with int8 channel weights only)")
        mixed = fused_mismatches(plan, self.support.fused)
        if bad or mixed:
            lines = ["cannot export this plan to vllm:"]
            if bad:
                lines.append("  schemes vLLM has no kernel for: " + ", ".join(bad[:6]))
            if mixed:
                lines.append("  fused modules with different options (vLLM applies one scheme per qkv_proj / gate_up_proj): "
                             + "; ".join(mixed[:4]) + (f", and {len(mixed) - 4} more" if len(mixed) > 4 else ""))
            lines.append("    -> re-plan with --target vllm (it ties fused modules and offers only vLLM's schemes)")
            raise ExportError("\n".join(lines))

    def build(self, plan: Plan) -> Export:
        result = recipe_export(self.name, plan)
        result.notes.append("serve: vllm serve DIR after oneshot(model=..., recipe=FILE, output_dir=DIR)")
        return result


def _k(shape) -> int:
    k = 1
    for s in shape[1:]:
        k *= s
    return k
