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
from typing import Any, ClassVar, Iterable, Mapping, Optional

from ..errors import ExportError
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
    bytes: Optional[int] = None  #: what the target's checkpoint stores for the planned layers, in its own accounting


@dataclass(frozen=True)
class Support:
    """What a target can express: the one declaration that both export checks and ``mpq plan --target`` read.

    ``group_sizes`` None means any; per-channel is the entry ``None``. ``fused`` lists sibling modules
    the runtime fuses into one kernel (``("q_proj", "k_proj", "v_proj")``): planning ties them to one
    option. ``per_tag`` ties each projection across blocks (one setting per linear tag). ``sizes``
    names the accounting in :data:`mpq.sizes.TARGET_SIZES` the target's checkpoint follows.
    ``presets`` are candidate grids as the tool's users name them (fields of ``CandidateSet``).
    """

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
    lm_head: bool = True
    dims_multiple: int = 1
    group_multiple: int = 1
    fused: tuple[tuple[str, ...], ...] = ()
    per_tag: bool = False
    sizes: str = "mpq"
    presets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    default_preset: Optional[str] = None

    def describe(self) -> str:
        """One line a user reads in errors and ``mpq targets``: what the target stores."""
        groups = "any" if self.group_sizes is None else _fmt_bits(self.group_sizes)
        grid = ("symmetric and asymmetric" if self.symmetric and self.asymmetric
                else "symmetric only" if self.symmetric else "asymmetric only")
        quantized = [w for w, ok in (("embeddings", self.embeddings), ("lm_head", self.lm_head)) if ok]
        return (f"bits {_fmt_bits(self.bits)}; group sizes {groups}"
                + (" (dividing the inputs)" if self.groups_divide_inputs else "")
                + f"; formats {','.join(sorted(f for f in self.formats if f != 'float'))}; {grid} integers"
                + (f"; activation bits {_fmt_bits(self.a_bits)}" if self.a_bits else "; weights only")
                + f"; quantizes {' and '.join(quantized) if quantized else 'neither embeddings nor lm_head'}"
                + (f"; weight dims multiples of {self.dims_multiple}" if self.dims_multiple > 1 else "")
                + (f"; group sizes multiples of {self.group_multiple}" if self.group_multiple > 1 else ""))

    def as_dict(self) -> dict:
        """JSON form for ``mpq targets --json``."""
        return {
            "bits": sorted(self.bits),
            "group_sizes": None if self.group_sizes is None else sorted(self.group_sizes, key=lambda g: -1 if g is None else g),
            "formats": sorted(self.formats), "symmetric": self.symmetric, "asymmetric": self.asymmetric,
            "a_bits": sorted(self.a_bits), "embeddings": self.embeddings, "lm_head": self.lm_head,
            "groups_divide_inputs": self.groups_divide_inputs, "dims_multiple": self.dims_multiple,
            "group_multiple": self.group_multiple, "fused": [list(f) for f in self.fused], "per_tag": self.per_tag,
            "sizes": self.sizes, "presets": {k: dict(v) for k, v in self.presets.items()}, "default_preset": self.default_preset,
        }


def linear_tag(name: str) -> str:
    """transformers' ``name_to_linear_tag``: drop ``model``, ``layers`` and numeric parts."""
    return ".".join(n for n in name.split(".") if n not in ("model", "layers") and not n.isnumeric())


def is_lm_head(name: str) -> bool:
    return name.rsplit(".", 1)[-1] == "lm_head"


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
    from ..experts import parse_slice_name  # here: it imports torch, which `mpq solve` must not load

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
        if is_lm_head(l.name) and not support.lm_head:
            add("lm_head", l, f"{l.option}")
        if support.dims_multiple > 1 and l.shape is not None and (l.shape[0] % support.dims_multiple or (in_features(l) or 0) % support.dims_multiple):
            add("dims", l, f"shape {list(l.shape)}")
        if support.group_multiple > 1 and l.group_size is not None and l.group_size % support.group_multiple:
            add("gmult", l, f"group size {l.group_size}")
        if l.format == "int" and l.w_bits not in support.bits:
            add("bits", l, f"{l.w_bits} bits")
        if support.group_sizes is not None and l.format == "int" and l.group_size not in support.group_sizes:
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
        "lm_head": f"{target} does not quantize lm_head; pass --keep-float lm_head (the plan's size no longer holds), or re-plan with --target {target}",
        "dims": f"{target} keeps layers whose weight dimensions are not multiples of {support.dims_multiple} in 16 bits; pass --keep-float with those layers (the plan's size no longer holds), or re-plan with --target {target}",
        "gmult": f"{target} group sizes are multiples of {support.group_multiple}; re-plan with --target {target}",
        "kv_cache": f"{target} has no KV-cache scheme; re-plan without --kv-bits (or with --kv-bits 16), or export to llmcompressor",
    }
    titles = {
        "channels": "channel-group entries", "expert": "slices of fused expert tensors",
        "format": "unsupported number formats", "prune": "pruned layers",
        "a_bits": "activation bits", "embedding": "quantized embeddings", "bits": "unsupported bit-widths",
        "group": "unsupported group sizes", "asym": "asymmetric layers", "sym": "symmetric layers",
        "divide": "group sizes that do not divide the inputs", "lm_head": "quantized lm_head",
        "dims": "weight dimensions it cannot quantize", "gmult": "unsupported group sizes",
        "divide": "group sizes that do not divide the inputs", "kv_cache": "KV-cache bits",
    }
    lines = [f"cannot export this plan to {target} ({support.describe()}):"]
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


def layer_bits(layer: PlanLayer, support: Support) -> Optional[int]:
    """Storage bits of one plan layer in the target's accounting (None when it cannot say)."""
    from ..sizes import TARGET_SIZES

    if is_kv_cache(layer.name):  # KV-cache memory: counted as planned (mpq.kv_cache), not stored in the checkpoint
        return layer.bits if layer.bits is not None else 8 * layer.bytes
    if layer.shape is None or layer.channels is not None:
        return None
    return TARGET_SIZES[support.sizes](layer.shape, layer.w_bits, layer.group_size, layer.format, layer.symmetric,
                                       layer.a_bits, embedding=is_embedding(layer.name))


def exported_bytes(plan: Plan, support: Support) -> Optional[int]:
    """Bytes the target stores for the plan's layers (each layer rounded up to whole bytes, as the plan counts)."""
    total = 0
    for l in plan.layers:
        bits = layer_bits(l, support)
        if bits is None:
            return None
        total += -(-bits // 8)
    return total


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
        result = self.build(plan)
        result.bytes = exported_bytes(plan, self.support)
        if result.bytes is not None:
            planned = sum(l.bytes for l in plan.layers)
            same = result.bytes == planned
            result.notes.append(f"{self.name} stores {result.bytes:,} bytes for the planned layers ({self.support.sizes} accounting); "
                                + ("the plan counts the same" if same else f"the plan counts {planned:,} "
                                   f"(plan with --target {self.name} to count in its accounting)"))
        return result

    @classmethod
    def plan_spec(cls, name: str, shape: list[int], spec: Any) -> Any:
        """The option this target stores for ``spec`` on layer ``name`` of ``shape`` (output first):
        ``spec`` itself, a normalized copy (a fixed block size, a per-channel group), or None when it
        has no way to store it. Planning calls it after the :class:`Support` checks."""
        return spec

    def check(self, plan: Plan) -> None:
        """Target-specific refusals beyond :class:`Support` (raise ExportError); none by default."""

    @abstractmethod
    def build(self, plan: Plan) -> Export:
        """The target's configuration for a plan that passed :func:`check_support`."""
