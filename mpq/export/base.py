"""What every exporter shares: the result type, the capability check, and name helpers.

An exporter turns an ``mpq.plan/v1`` into a quantizer's own configuration. It either expresses
every planned layer exactly (bits, group size, format, float layers) or refuses with an
:class:`~mpq.errors.ExportError` that lists every layer it cannot express and what to change.
"""
from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterable, Optional

from ..errors import ExportError
from ..experts import parse_slice_name
from ..kv_cache import is_kv_cache
from ..schema import Plan, PlanLayer


@dataclass
class ExportFile:
    """One file of an export: ``suffix`` is appended to the output stem (``.json``, ``.recipe.yaml``)."""

    suffix: str
    content: str


@dataclass
class Export:
    """An exporter's result: the files to write (the first is the main one), the data, and notes."""

    target: str
    files: list[ExportFile]
    data: Any
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Support:
    """What a target can express. ``group_sizes`` None means any; per-channel is the entry ``None``."""

    bits: frozenset[int]
    group_sizes: Optional[frozenset[Optional[int]]] = None
    formats: frozenset[str] = frozenset({"int", "float"})
    asymmetric: bool = True
    symmetric: bool = True
    prune: bool = False
    a_bits: frozenset[int] = frozenset()
    embeddings: bool = False
    groups_divide_inputs: bool = False
    #: whether the target can give one expert's slice of a fused 3-D expert tensor its own setting
    expert_slices: bool = False
    #: whether the target can carry planned KV-cache bits (``<attention>.kv_cache`` entries, see mpq.kv_cache)
    kv_cache: bool = False


_EMBEDDING_WORDS = ("embed", "wte", "wpe")


def is_embedding(name: str) -> bool:
    """Embeddings by their Hugging Face names (``embed_tokens``, ``word_embeddings``, GPT-2's ``wte``/``wpe``)."""
    last = name.rsplit(".", 1)[-1]
    return any(w in last for w in _EMBEDDING_WORDS)


def is_float(layer: PlanLayer) -> bool:
    return layer.format == "float"


def in_features(layer: PlanLayer) -> Optional[int]:
    if layer.shape is None:
        return None
    k = 1
    for s in layer.shape[1:]:
        k *= s
    return k


def anchored(name: str) -> str:
    """A regex that matches exactly ``name`` (dots escaped, anchored at both ends)."""
    return "^" + re.escape(name) + "$"


def most_common(items: Iterable[Any]) -> Any:
    """The most frequent item; ties go to the first seen."""
    counts = Counter(items)
    best = max(counts.values())
    for item in counts:
        if counts[item] == best:
            return item
    raise ValueError("empty")


def _fmt_bits(values: Iterable[Optional[int]]) -> str:
    return ",".join("none" if v is None else str(v) for v in sorted(values, key=lambda v: -1 if v is None else v))


def check_support(plan: Plan, target: str, support: Support) -> None:
    """Refuse the plan if any layer needs what ``support`` lacks; the message lists every such layer."""
    problems: dict[str, list[str]] = {}

    def add(kind: str, layer: PlanLayer, detail: str) -> None:
        problems.setdefault(kind, []).append(f"{layer.name} ({detail})")

    for l in plan.layers:
        if is_kv_cache(l.name):  # planned KV-cache bits: the target carries them or refuses them by name
            if not support.kv_cache and l.w_bits < 16:
                add("kv_cache", l, l.option)
            continue
        if l.channels is not None:
            add("channels", l, f"output channels {list(l.channels)} of {l.target}")
            continue
        if l.format not in support.formats:
            add("format", l, l.format)
            continue
        if l.prune_ratio > 0 and not support.prune:
            add("prune", l, f"{l.prune_structure} {l.prune_ratio:g}")
        if l.a_bits is not None and l.a_bits not in support.a_bits:
            add("a_bits", l, f"a_bits={l.a_bits}")
        if is_float(l):
            continue
        if parse_slice_name(l.target) and not support.expert_slices:
            add("expert", l, f"expert {parse_slice_name(l.target)[1]} of the fused tensor {parse_slice_name(l.target)[0]}")
            continue
        if is_embedding(l.name) and not support.embeddings:
            add("embedding", l, f"{l.option}")
        if l.format == "int" and l.w_bits not in support.bits:
            add("bits", l, f"{l.w_bits} bits")
        if support.group_sizes is not None and l.group_size not in support.group_sizes:
            add("group", l, f"group size {l.group_size or 'none (per channel)'}")
        if l.format == "int" and not l.symmetric and not support.asymmetric:
            add("asym", l, "asymmetric")
        if l.format == "int" and l.symmetric and not support.symmetric:
            add("sym", l, "symmetric")
        k = in_features(l)
        if support.groups_divide_inputs and l.group_size is not None and k is not None and k % l.group_size:
            add("divide", l, f"group size {l.group_size} does not divide {k} inputs")
    if not problems:
        return
    hints = {
        "channels": "plan whole layers: this target has one setting per module, not per channel group",
        "expert": f"{target} addresses modules, not one expert's slice of a fused 3-D expert tensor; keep those layers in float "
                  "(--bits ...,16 and a plan that leaves them at 16), or use mpq apply, which quantizes each slice as planned",
        "format": f"re-plan with --formats {','.join(sorted(f for f in support.formats if f != 'float')) or 'int'}",
        "prune": f"{target} has no pruning; re-plan with --prune 0",
        "a_bits": (f"re-plan without --a-bits, or with --a-bits {_fmt_bits(support.a_bits)}" if support.a_bits
                   else f"{target} quantizes weights only; re-plan without --a-bits"),
        "embedding": f"{target} does not quantize embeddings; pass --keep-float NAME to export them in float (the plan's size no longer holds), or export to llamacpp or torchao",
        "bits": f"{target} runs {_fmt_bits(support.bits)} bits; re-plan with --bits {_fmt_bits(support.bits)},16",
        "group": f"{target} takes group sizes {_fmt_bits(support.group_sizes or ())}; re-plan with --group-sizes {_fmt_bits(support.group_sizes or ())}",
        "asym": f"{target} is symmetric only; re-plan with --symmetric sym",
        "sym": f"{target} always stores a zero point; re-plan with --symmetric asym",
        "divide": "re-plan with group sizes that divide every layer's input features",
        "kv_cache": f"{target} has no KV-cache scheme; re-plan without --kv-bits (or with --kv-bits 16), or export to llmcompressor",
    }
    titles = {
        "channels": "channel-group entries", "expert": "slices of fused expert tensors",
        "format": "unsupported number formats", "prune": "pruned layers",
        "a_bits": "activation bits", "embedding": "quantized embeddings", "bits": "unsupported bit-widths",
        "group": "unsupported group sizes", "asym": "asymmetric layers", "sym": "symmetric layers",
        "divide": "group sizes that do not divide the inputs", "kv_cache": "KV-cache bits",
    }
    lines = [f"cannot export this plan to {target}:"]
    for kind, items in problems.items():
        shown = ", ".join(items[:6]) + (f", and {len(items) - 6} more" if len(items) > 6 else "")
        lines.append(f"  {titles[kind]}: {shown}")
        lines.append(f"    -> {hints[kind]}")
    raise ExportError("\n".join(lines))


def keep_float(plan: Plan, names: Iterable[str]) -> tuple[Plan, list[str]]:
    """A copy of ``plan`` with ``names`` kept in float (16-bit), and a note saying so."""
    names = list(names)
    known = {l.name for l in plan.layers}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ExportError(f"--keep-float: the plan has no layer {', '.join(map(repr, unknown))}")
    layers = []
    for l in plan.layers:
        if l.name in names and not is_float(l):
            bits = 16 * l.params
            l = l.model_copy(update={"option": "fp16", "w_bits": 16, "group_size": None, "format": "float", "symmetric": True,
                                     "prune_ratio": 0.0, "prune_structure": "unstructured", "bits": bits, "bytes": -(-bits // 8)})
        layers.append(l)
    notes = [f"kept in float on request (the plan's size no longer holds): {', '.join(names)}"] if names else []
    return plan.model_copy(update={"layers": layers}), notes


def to_json(data: Any) -> str:
    return json.dumps(data, indent=2) + "\n"


class Exporter(ABC):
    """One target quantizer. Subclass, set ``name`` and ``support``, implement :meth:`build`, decorate with
    :func:`mpq.export.register_exporter`::

        @register_exporter
        class MyTool(Exporter):
            name = "mytool"
            support = Support(bits=frozenset({4, 8}))

            def build(self, plan):
                return Export(self.name, [ExportFile(".json", to_json(cfg))], cfg)
    """

    name: ClassVar[str]
    support: ClassVar[Support]

    def __init__(self, **options: Any) -> None:
        self.options = options

    def export(self, plan: Plan) -> Export:
        check_support(plan, self.name, self.support)
        if not self.support.kv_cache:  # only float (kv16) cache entries got past the check: nothing to carry
            plan = plan.model_copy(update={"layers": [l for l in plan.layers if not is_kv_cache(l.name)]})
        self.check(plan)
        return self.build(plan)

    def check(self, plan: Plan) -> None:
        """Target-specific refusals beyond :class:`Support` (raise ExportError); none by default."""

    @abstractmethod
    def build(self, plan: Plan) -> Export:
        """The target's configuration for a plan that passed :func:`check_support`."""
