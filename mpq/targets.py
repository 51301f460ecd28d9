"""Planning for the quantizer the user runs (``mpq plan --target NAME``), read from its exporter's ``Support``.

A target restricts each layer's candidates to what it can store (bits, group sizes dividing the
layer's inputs, formats, symmetric or not, embeddings and ``lm_head``), keeps the layers it cannot
quantize in float inside the budget, ties the modules it fuses (and, for per-tag targets, each
projection across blocks) to one option through the problem's ``ties``, and counts every option's
size in its own accounting (:data:`mpq.sizes.TARGET_SIZES`). A plan made this way carries the target
in its provenance and exports to it with the size it planned.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Optional, Sequence

from .errors import PlanInfeasible, TargetError
from .export import get_exporter_class
from .export.base import Support, is_embedding, is_lm_head, linear_tag
from .sizes import TARGET_SIZES

#: CandidateSet fields a preset may set.
PRESET_FIELDS = ("bits", "group_sizes", "formats", "symmetric", "prune", "a_bits")


def support_of(target: str) -> Support:
    return get_exporter_class(target).support


def candidates(target: str, preset: Optional[str] = None, **overrides: Any):
    """The candidate grid for ``target``: its ``preset`` (or default preset), with ``overrides`` on top."""
    from .candidates import CandidateSet

    support = support_of(target)
    name = preset or support.default_preset
    if preset is not None and preset not in support.presets:
        raise TargetError(f"target {target!r} has no preset {preset!r}; its presets: {', '.join(sorted(support.presets)) or 'none'} "
                          f"({target} supports {support.describe()})")
    fields = dict(support.presets.get(name, {})) if name else {}
    unknown = set(fields) - set(PRESET_FIELDS)
    if unknown:
        raise TargetError(f"target {target!r}, preset {name!r}: unknown fields {sorted(unknown)}; expected some of {list(PRESET_FIELDS)}")
    fields.update({k: v for k, v in overrides.items() if v is not None})
    return CandidateSet(**{k: tuple(v) for k, v in fields.items()})


def _inputs(shape: Sequence[int]) -> int:
    k = 1
    for s in shape[1:]:
        k *= s
    return k


def quantizable(target: str, name: str, shape: Sequence[int], kind: str = "") -> Optional[str]:
    """Why the target keeps layer ``name`` in float whatever the candidates (None when it can quantize it)."""
    from .experts import parse_slice_name

    support = support_of(target)
    if parse_slice_name(name):
        return "one expert's slice of a fused 3-D expert tensor (the target addresses modules; mpq apply quantizes slices)"
    if (kind == "embedding" or is_embedding(name)) and not support.embeddings:
        return "embeddings"
    if is_lm_head(name) and not support.lm_head:
        return "lm_head"
    m = support.dims_multiple
    if m > 1 and (shape[0] % m or _inputs(shape) % m):
        return f"weight dimensions not multiples of {m}"
    return None


def expressible(support: Support, shape: Sequence[int], spec) -> bool:
    """Whether ``support`` stores ``spec`` on a weight of ``shape`` (the generic checks of Support)."""
    if spec.format == "float":
        return True
    if spec.format not in support.formats:
        return False
    if spec.prune_ratio > 0 and not support.prune:
        return False
    if spec.a_bits is not None and spec.a_bits not in support.a_bits:
        return False
    if spec.format == "int":
        if spec.w_bits not in support.bits:
            return False
        if (spec.symmetric and not support.symmetric) or (not spec.symmetric and not support.asymmetric):
            return False
    g = spec.group_size
    if support.group_sizes is not None and spec.format == "int" and g not in support.group_sizes:
        return False
    if g is not None:
        if support.groups_divide_inputs and _inputs(shape) % g:
            return False
        if support.group_multiple > 1 and g % support.group_multiple:
            return False
    return True


def layer_specs(target: str, name: str, shape: Sequence[int], specs: Mapping[str, Any], kind: str = "") -> dict[str, Any]:
    """The options ``target`` can store for one layer, keyed by option id (a float option always stays).

    Raises TargetError when the target can quantize the layer but none of the candidates fits it.
    """
    from .candidates import option_id
    from .quant import QuantSpec

    cls = get_exporter_class(target)
    support = cls.support
    out: dict[str, Any] = {}
    floats = [s for s in specs.values() if s.format == "float"]
    float_spec = floats[0] if floats else QuantSpec(16, None, "float")
    reason = quantizable(target, name, shape, kind)
    if reason is None:
        for spec in specs.values():
            if spec.format == "float" or not expressible(support, shape, spec):
                continue
            stored = cls.plan_spec(name, list(shape), spec)  # the target's own block or channel layout
            if stored is not None:
                out.setdefault(option_id(stored), stored)
        if not out:
            asked = ", ".join(sorted(specs)) or "none"
            raise TargetError(f"target {target!r} cannot store any candidate for layer {name!r} (shape {list(shape)}): "
                              f"candidates {asked}; {target} supports {support.describe()}\n"
                              f"    -> use a preset (mpq targets lists them) or candidates it supports")
    out[option_id(float_spec)] = float_spec
    return out


def option_bits(target: str, name: str, shape: Sequence[int], spec) -> int:
    """Storage bits of ``spec`` on layer ``name`` in the target's accounting."""
    support = support_of(target)
    bits = TARGET_SIZES[support.sizes](list(shape), spec.w_bits, spec.group_size, spec.format, spec.symmetric, spec.a_bits,
                                       embedding=is_embedding(name))
    if bits is None:
        raise TargetError(f"target {target!r}: its {support.sizes} accounting has no size for {name!r} at {spec}")
    if spec.prune_ratio > 0:
        raise TargetError(f"target {target!r} does not store pruned weights")
    return bits


def ties(target: str, names: Iterable[str]) -> list[list[str]]:
    """Groups of layers the target must give one option: fused siblings (same parent) and, for per-tag
    targets, the same projection in every block. Overlapping groups are merged."""
    support = support_of(target)
    names = list(names)
    parent: dict[str, str] = {n: n for n in names}

    def find(n: str) -> str:
        while parent[n] != n:
            parent[n] = parent[parent[n]]
            n = parent[n]
        return n

    def union(group: list[str]) -> None:
        for other in group[1:]:
            a, b = find(group[0]), find(other)
            if a != b:
                parent[b] = a

    keyed: dict[tuple, list[str]] = {}
    for n in names:
        prefix, _, leaf = n.rpartition(".")
        for i, fused in enumerate(support.fused):
            if leaf in fused:
                keyed.setdefault(("fused", prefix, i), []).append(n)
        if support.per_tag:
            keyed.setdefault(("tag", linear_tag(n)), []).append(n)
    for group in keyed.values():
        if len(group) > 1:
            union(group)
    groups: dict[str, list[str]] = {}
    for n in names:
        groups.setdefault(find(n), []).append(n)
    return [g for g in groups.values() if len(g) > 1]


def check_budget(target: str, problem) -> None:
    """Refuse a budget below the smallest plan the target can store, naming what it supports."""
    from .schema import RESOURCES

    by_name = {l.name: l for l in problem.layers}
    tied = {n for t in problem.ties for n in t}
    groups = [[by_name[n] for n in t] for t in problem.ties] + [[l] for l in problem.layers if l.name not in tied]
    min_bits = min_bytes = 0
    for group in groups:
        common = set.intersection(*({o.id for o in l.options} for l in group))
        best = min(common, key=lambda oid: sum(l.option(oid).bits or 8 * l.option(oid).bytes for l in group))
        min_bits += sum(l.option(best).bits or 8 * l.option(best).bytes for l in group)
        min_bytes += sum(l.option(best).bytes for l in group)
    params = sum(l.params for l in problem.layers)
    reach = {"max_bytes": min_bytes, "max_avg_bits": min_bits / params if params else 0.0}
    active = problem.constraints.active()
    low = {k: v for k, v in active.items() if k in reach and v < reach[k] * (1 - 1e-12)}
    if not low:
        return
    support = support_of(target)
    floats = [l.name for l in problem.layers if len(l.options) == 1]
    said = ", ".join(f"{RESOURCES[k].total} {v:g} < {reach[k]:.6g}" for k, v in low.items())
    raise TargetBudgetError(
        f"the budget is below the smallest plan target {target!r} can store ({said}): {target} supports {support.describe()}; "
        f"sizes in its {support.sizes} accounting"
        + (f"; kept in float: {', '.join(floats[:6])}{' and more' if len(floats) > 6 else ''}" if floats else "")
        + "\n    -> raise the budget, or choose a preset with fewer bits (mpq targets)",
        {k: reach[k] for k in low},
    )


class TargetBudgetError(PlanInfeasible, TargetError):
    """The budget is below the smallest plan the target can store."""


def describe(target: str) -> dict:
    """``mpq targets --json``: a target's support, presets and size accounting."""
    cls = get_exporter_class(target)
    doc = (TARGET_SIZES[cls.support.sizes].__doc__ or "").strip().splitlines()
    return {"name": target, "summary": (cls.__doc__ or "").strip().splitlines()[0], "supports": cls.support.describe(),
            "sizes_doc": doc[0] if doc else "", **cls.support.as_dict()}

