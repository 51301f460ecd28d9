"""GPTQModel: ``QuantizeConfig`` keyword arguments with a per-layer ``dynamic`` map.

GPTQModel matches ``dynamic`` keys with ``re.match`` (a ``+:`` or no prefix overrides, ``-:`` skips
the layer), first match wins, and it moves every ``-:`` key ahead of the others. Each key here is
one module's exact name, escaped and anchored (``^model\\.layers\\.0\\.mlp\\.up_proj$``), so exactly
one key matches each planned layer whatever the order. The base ``bits``/``group_size``/``sym`` are
the plan's most common setting; layers with that setting need no key. Layers the plan does not
list take the base setting, as GPTQModel quantizes every linear layer of its decoder blocks.
"""
from __future__ import annotations

from ..schema import Plan
from . import register_exporter
from .base import Export, ExportFile, Exporter, Support, anchored, is_float, most_common, to_json

#: Bit-widths GPTQModel's gptq/gptq_v2 checkpoints and kernels run (5-7 bits need its planar gptq_p layout).
GPTQ_BITS = frozenset({2, 3, 4, 8})
GPTQ_GROUPS = frozenset({None, 16, 32, 64, 128, 256, 512, 1024})


def _setting(layer) -> dict:
    return {"bits": layer.w_bits, "group_size": -1 if layer.group_size is None else layer.group_size, "sym": layer.symmetric}


@register_exporter
class GPTQModelExporter(Exporter):
    """GPTQModel ``QuantizeConfig(bits, group_size, sym, dynamic=...)`` as JSON keyword arguments."""

    name = "gptqmodel"
    support = Support(
        bits=GPTQ_BITS, group_sizes=GPTQ_GROUPS, groups_divide_inputs=True, sizes="gptq",
        presets={"mixed": {"bits": [2, 3, 4, 8, 16], "group_sizes": [128]},
                 "w4a16": {"bits": [4, 8, 16], "group_sizes": [128]},
                 "w4a16-g32": {"bits": [4, 8, 16], "group_sizes": [32]}},
        default_preset="mixed",
    )

    def build(self, plan: Plan) -> Export:
        quantized = [l for l in plan.layers if not is_float(l)]
        if not quantized:
            from ..errors import ExportError

            raise ExportError("cannot export to gptqmodel: the plan keeps every layer in float, so there is nothing to quantize")
        base = dict(most_common(tuple(sorted(_setting(l).items())) for l in quantized))
        dynamic: dict[str, dict] = {}
        for l in plan.layers:
            if is_float(l):
                dynamic["-:" + anchored(l.name)] = {}
            elif _setting(l) != base:
                dynamic["+:" + anchored(l.name)] = _setting(l)
        lm_head = any(l.name == "lm_head" and not is_float(l) for l in plan.layers)
        config = {**base, "desc_act": False, "lm_head": lm_head, "dynamic": dynamic}
        notes = [f"base setting {base} covers {sum(_setting(l) == base for l in quantized)} layers; "
                 f"{len(dynamic)} exact dynamic entries cover the rest ({sum(k.startswith('-:') for k in dynamic)} kept in float)",
                 "use: QuantizeConfig(**json.load(open(FILE)))"]
        return Export(self.name, [ExportFile(".json", to_json(config))], config, notes)
