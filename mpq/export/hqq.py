"""HQQ through transformers: ``HqqConfig(dynamic_config=..., skip_modules=...)`` keyed by linear tag.

transformers names each ``nn.Linear`` by its tag, the module name without ``model``, ``layers`` and
layer indices (``model.layers.3.self_attn.q_proj`` -> ``self_attn.q_proj``), and looks each tag up
in ``dynamic_config``; a tag it does not find is left unquantized. One tag therefore covers that
projection in every block: a plan that gives different settings to different block indices
cannot be expressed, and is refused unless ``merge="max"``, which gives each tag the most precise
setting among its layers (most bits, smallest group; float if any of them is float) and lists
every merge in the notes. HQQ always stores a zero point per group, so symmetric layers are
stored asymmetric (a little larger than the plan counts).
"""
from __future__ import annotations

from ..errors import ExportError
from ..schema import Plan, PlanLayer
from . import register_exporter
from .base import Export, ExportFile, Exporter, Support, is_float, linear_tag, to_json

HQQ_BITS = frozenset({1, 2, 3, 4, 5, 6, 8})
MERGES = ("max",)
_CONV1D = ("c_attn", "c_fc", "c_proj")


def _setting(layer: PlanLayer) -> tuple:
    return ("float",) if is_float(layer) else (layer.w_bits, layer.group_size)


def _most_precise(settings: list[tuple]) -> tuple:
    if any(s == ("float",) for s in settings):
        return ("float",)
    bits = max(s[0] for s in settings)
    groups = [s[1] for s in settings]
    group = None if all(g is None for g in groups) else min(g for g in groups if g is not None)
    return (bits, group)


def _describe(s: tuple) -> str:
    return "float" if s == ("float",) else f"{s[0]} bits, group {s[1] or 'none'}"


@register_exporter
class HQQExporter(Exporter):
    """transformers ``HqqConfig`` keyword arguments (``dynamic_config`` per linear tag)."""

    name = "hqq"
    support = Support(
        bits=HQQ_BITS, groups_divide_inputs=True, group_multiple=8, per_tag=True, sizes="hqq",
        presets={"mixed": {"bits": [2, 3, 4, 8, 16], "group_sizes": [64], "symmetric": [False]},
                 "4bit": {"bits": [4, 8, 16], "group_sizes": [64], "symmetric": [False]}},
        default_preset="mixed",
    )

    def check(self, plan: Plan) -> None:
        merge = self.options.get("merge")
        if merge is not None and merge not in MERGES:
            raise ExportError(f"hqq: unknown merge {merge!r}; expected one of {list(MERGES)}")
        conv1d = [l.name for l in plan.layers if not is_float(l) and l.name.rsplit(".", 1)[-1] in _CONV1D]
        if conv1d:
            raise ExportError(f"cannot export this plan to hqq: HQQ quantizes nn.Linear only, and {', '.join(conv1d)} look like "
                              "transformers' Conv1D (GPT-2)\n    -> export to torchao or llmcompressor instead")

    def build(self, plan: Plan) -> Export:
        by_tag: dict[str, list[PlanLayer]] = {}
        for l in plan.layers:
            by_tag.setdefault(linear_tag(l.name), []).append(l)
        notes: list[str] = []
        varying = {tag: layers for tag, layers in by_tag.items() if len({_setting(l) for l in layers}) > 1}
        if varying and self.options.get("merge") != "max":
            lines = ["cannot export this plan to hqq: HQQ sets one precision per linear tag (the same projection in every block), "
                     "but the plan varies across layer indices:"]
            for tag, layers in list(varying.items())[:8]:
                lines.append(f"  {tag}: " + "; ".join(f"{l.name} = {_describe(_setting(l))}" for l in layers))
            lines.append("    -> pass --merge max to give each tag its most precise setting, or export to a target with per-layer "
                         "settings (gptqmodel, llmcompressor, autoround, torchao, llamacpp)")
            raise ExportError("\n".join(lines))
        dynamic: dict[str, dict] = {}
        skip = []
        for tag, layers in by_tag.items():
            settings = [_setting(l) for l in layers]
            chosen = _most_precise(settings)
            if tag in varying:
                notes.append(f"merged {tag}: " + ", ".join(f"{l.name} {_describe(s)}" for l, s in zip(layers, settings))
                             + f" -> {_describe(chosen)}")
            if chosen == ("float",):
                skip.append(tag)
            else:
                dynamic[tag] = {"nbits": chosen[0], "group_size": chosen[1]}
        if "lm_head" not in dynamic and "lm_head" not in skip:
            skip.append("lm_head")  # transformers' default: lm_head stays in float
        if any(l.symmetric for l in plan.layers if not is_float(l)):
            notes.append("HQQ stores a zero point per group: symmetric layers are stored asymmetric")
        notes.append("use: HqqConfig(**json.load(open(FILE))); linear tags absent from dynamic_config stay in float")
        config = {"dynamic_config": dynamic, "skip_modules": skip}
        return Export(self.name, [ExportFile(".json", to_json(config))], config, notes)
