"""llama.cpp: a ``llama-quantize --tensor-type-file`` mapping each planned tensor to a ggml type.

The file holds ``PATTERN=TYPE`` tokens separated by whitespace (no comments). llama-quantize
lowercases each pattern and tests it with ``std::regex_search`` against GGUF tensor names such as
``blk.3.ffn_down.weight``; the first pattern that matches decides (older releases let the last one
win). Each pattern here is one tensor's exact name, escaped and anchored, so exactly one matches.
Hugging Face names map to GGUF names for Llama-family models (Llama, Mistral, Qwen2 layouts).

Each layer takes the ggml type that stores its planned bits: the k-quant when the row length is a
multiple of 256 (``q4_K``...), else the 32-element legacy type (``q4_0``/``q4_1``, ``q5_0``/``q5_1``,
``q8_0``); fp4 e2m1 with 32-blocks is ``mxfp4``; float layers are ``f16``. ggml types fix their own
block structure, so the plan's group size is recorded beside the type, not reproduced (a plan made
with ``--target llamacpp`` carries each type's block as its group size and its true size). A sidecar
``.json`` records, per tensor, the Hugging Face name, the type and its true bits per weight.
"""
from __future__ import annotations

import re
from typing import Optional

from ..errors import ExportError
from ..schema import Plan, PlanLayer
from ..sizes import GGML_TYPES as GGML_BLOCKS
from ..sizes import ggml_bits_per_weight, ggml_type_for
from . import register_exporter
from .base import Export, ExportFile, Exporter, Support, anchored, in_features, is_float, to_json

GGML_TYPES = {t: (ggml_bits_per_weight(t), block) for t, (block, _) in GGML_BLOCKS.items()}  #: type -> (bits per weight, block)

_BLOCK = re.compile(r"^model\.layers\.(\d+)\.(.+)$")
_IN_BLOCK = {
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
}
_GLOBAL = {"model.embed_tokens": "token_embd", "lm_head": "output"}


def gguf_name(hf_name: str) -> Optional[str]:
    """The GGUF tensor name of a Llama-family module's weight, or None when it has no mapping."""
    if hf_name in _GLOBAL:
        return f"{_GLOBAL[hf_name]}.weight"
    m = _BLOCK.match(hf_name)
    if m and m.group(2) in _IN_BLOCK:
        return f"blk.{m.group(1)}.{_IN_BLOCK[m.group(2)]}.weight"
    return None


def ggml_type(layer: PlanLayer) -> Optional[str]:
    """The ggml type that stores the layer's planned precision, or None when none does."""
    return ggml_type_for(in_features(layer) or 0, layer.w_bits, layer.format, layer.symmetric)


@register_exporter
class LlamaCppExporter(Exporter):
    """A ``--tensor-type-file`` for llama-quantize plus a JSON record of each tensor's type and bits per weight."""

    name = "llamacpp"
    support = Support(
        bits=frozenset({2, 3, 4, 5, 6, 8}), formats=frozenset({"int", "float", "fp4_e2m1"}), embeddings=True, sizes="ggml",
        presets={"mixed": {"bits": [2, 3, 4, 5, 6, 8, 16]}, "k-quants": {"bits": [2, 3, 4, 5, 6, 16]},
                 "q4-q8": {"bits": [4, 8, 16]}},
        default_preset="mixed",
    )

    @classmethod
    def plan_spec(cls, name, shape, spec):
        """The ggml type's own block becomes the option's group size (256 for k-quants, 32 otherwise);
        layers without a GGUF tensor name, or rows no ggml type stores, have no option."""
        if gguf_name(name) is None:
            return None
        k = 1
        for s in shape[1:]:
            k *= s
        t = ggml_type_for(k, spec.w_bits, spec.format, spec.symmetric)
        if t is None:
            return None
        return spec.model_copy(update={"group_size": GGML_BLOCKS[t][0]})

    def check(self, plan: Plan) -> None:
        unmapped = [l.name for l in plan.layers if gguf_name(l.name) is None]
        if unmapped:
            raise ExportError(f"cannot export this plan to llamacpp: no GGUF tensor name for {', '.join(unmapped[:8])}"
                              + (f" and {len(unmapped) - 8} more" if len(unmapped) > 8 else "")
                              + "\n    -> llamacpp export knows Llama-family names (model.layers.N.self_attn.q_proj, mlp.down_proj, "
                              "model.embed_tokens, lm_head)")

    def build(self, plan: Plan) -> Export:
        missing = []
        tokens, record = [], {}
        for l in plan.layers:
            t = ggml_type(l)
            if t is None:
                missing.append(f"{l.name} ({l.option}, {in_features(l)} inputs)")
                continue
            name = gguf_name(l.name)
            tokens.append(f"{anchored(name)}={t}")
            bpw, block = GGML_TYPES[t]
            record[name] = {"hf_name": l.name, "type": t, "bits_per_weight": bpw, "block": block,
                            "planned_bits": l.w_bits, "planned_group_size": l.group_size, "params": l.params}
        if missing:
            raise ExportError("cannot export this plan to llamacpp: no ggml type stores these layers' precision: "
                              + ", ".join(missing)
                              + "\n    -> 2, 3 and 6 bits need k-quants (row length a multiple of 256); 4, 5 and 8 bits also fit "
                              "32-element types; re-plan those layers with --bits 4,5,8,16")
        params = sum(r["params"] for r in record.values())
        avg = sum(r["bits_per_weight"] * r["params"] for r in record.values()) / params if params else 0.0
        data = {"tensor_types": record, "avg_bits_per_weight": avg,
                "usage": "llama-quantize --tensor-type-file FILE model-f16.gguf model-out.gguf Q8_0  "
                         "(the base type must be a quantized type for overrides to apply; do not also pass "
                         "--token-embedding-type or --output-tensor-type, which take precedence over the file)"}
        notes = [f"{len(record)} tensors; true bits per weight {avg:.3f} (ggml block scales included; the plan counts {plan.totals.avg_bits:.3f})",
                 "ggml types fix their own blocks: the plan's group sizes are recorded in the .json, not reproduced"]
        files = [ExportFile(".txt", "\n".join(tokens) + "\n"), ExportFile(".json", to_json(data))]
        return Export(self.name, files, data, notes)
