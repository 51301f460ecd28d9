"""The cost model: sensitivities + candidate options -> an ``mpq.problem/v1``.

For layer l and option o the predicted loss increase is ``score_l * ||Q_o(W_l) - W_l||^2``
(HAWQ-V2 style, the perturbation measured with the real quantizer on the real weights), unless
the sensitivity table measured the option's distortion itself. An option with activation bits
adds the layer's measured activation distortion: ``d(w, a) = d_w + d_a`` (``layers.*.activations``
of the table, see ``mpq.sensitivity.activation``), so ``int4-a8`` costs more than ``int4`` when the
layer's input matters. Sizes follow ``mpq.sizes``.
"""
from __future__ import annotations

from typing import Iterable, Mapping, Optional, Sequence

from .errors import DocumentError, UnknownLayer
from .graph import LayerGraph
from .quant import QuantSpec, quantization_error, weight_matrix
from .schema import Constraints, ModelRef, Option, Problem, ProblemLayer, ProblemPair, SensitivityTable
from .sizes import bitops, out_and_in, to_bytes, weight_bits
from .candidates import DEFAULT_BITS, CandidateSet, fp_formats_for, option_id  # noqa: F401 (the grid lives there)
from . import targets

def option_for(layer_shape: Sequence[int], macs: int, spec: QuantSpec, distortion: float, oid: str,
               latency_ms: Optional[float] = None, bits: Optional[int] = None) -> Option:
    """One problem option; ``bits`` overrides mpq's default size convention (mpq.sizes) (a target's own accounting)."""
    if bits is None:
        bits = weight_bits(layer_shape, spec.w_bits, spec.group_size, spec.format, spec.symmetric, spec.prune_ratio)
    return Option(
        id=oid, w_bits=spec.w_bits, group_size=spec.group_size, format=spec.format, symmetric=spec.symmetric,
        prune_ratio=spec.prune_ratio, prune_structure=spec.prune_structure, a_bits=spec.a_bits,
        bits=bits, bytes=to_bytes(bits), bitops=bitops(macs, spec.w_bits, spec.a_bits, spec.prune_ratio),
        latency_ms=latency_ms, distortion=distortion,
    )


def distinct_specs(shape: Sequence[int], specs: Mapping[str, QuantSpec]) -> dict[str, QuantSpec]:
    """``specs`` without the group options that are their per-channel twin on this layer.

    A group as wide as the layer's inputs or wider is one group per row: the same numbers and the same
    size as the per-channel option. Keeping both gives the solver a tie whose group label exporters
    refuse ("group size 128 does not divide 32 inputs"), so the per-channel option is kept alone.
    """
    _, inputs = out_and_in(shape)
    out = {}
    for oid, spec in specs.items():
        if spec.group_size is not None and spec.group_size >= inputs:
            twin = option_id(spec.model_copy(update={"group_size": None}))
            if twin in specs:
                continue
        out[oid] = spec
    return out


def build_problem(
    graph: LayerGraph,
    table: SensitivityTable,
    candidates: Mapping[str, QuantSpec] | CandidateSet | None = None,
    constraints: Constraints | Mapping[str, float] | None = None,
    *,
    ties: Iterable[Sequence[str]] = (),
    layers: Optional[Sequence[str]] = None,
    channel_groups: int = 1,
    target: Optional[str] = None,
    latency: Optional[Mapping[str, Mapping[str, float]]] = None,
    routing_weight: bool = False,
) -> Problem:
    """One problem layer per graph layer, one option per candidate, distortions from the table.

    ``routing_weight``: an expert layer's distortions are multiplied by its routing frequency
    (``layers.*.routing_frequency``, MC-MoE's activation-frequency weighting), for tables whose
    estimator did not see the calibration data (data-free scores treat every expert alike).

    ``latency`` gives each layer's milliseconds per option id (``mpq.latency.option_latencies``);
    a ``max_latency_ms`` budget needs it.

    ``channel_groups=N`` splits each layer's output channels into up to N contiguous groups
    (MixLLM-style sub-layer groups): one problem layer ``name[start:stop]`` per group, with
    ``module``/``channels`` set, sizes counted for the slice, and distortion measured on the slice
    (a measured per-layer distortion is shared out in proportion to each slice's quantization error).
    """
    if channel_groups < 1:
        raise DocumentError(f"channel_groups must be >= 1, got {channel_groups}")
    specs = (candidates or CandidateSet()).specs() if not isinstance(candidates, Mapping) else dict(candidates)
    if constraints is None:
        raise DocumentError("constraints: give at least one budget (max_bytes, max_avg_bits, max_bitops, max_latency_ms)")
    constraints = constraints if isinstance(constraints, Constraints) else Constraints(**dict(constraints))
    names = list(layers) if layers is not None else graph.names
    if constraints.max_latency_ms is not None and latency is None:
        raise DocumentError("budget max_latency_ms needs each option's latency: measure a table with `mpq profile` "
                            "and pass it with --latency-table (or write latency_ms into a problem's options)")
    for name in table.layers:
        if name not in graph.layers:
            raise UnknownLayer(f"sensitivity table ({table.estimator}) names layer {name!r}, which the model does not have")
    out_layers = []
    for name in names:
        info = graph.layers.get(name)
        if info is None:
            raise UnknownLayer(f"layer {name!r} is not a quantizable layer of the model")
        sens = table.layers.get(name)
        if sens is None:
            raise UnknownLayer(f"sensitivity table ({table.estimator}) has no entry for layer {name!r}")
        w = weight_matrix(graph.module(name))
        if channel_groups > 1:
            out_layers.extend(_channel_group_layers(name, info, sens, w, specs, channel_groups, table.estimator,
                                                    latency.get(name) if latency else None))
            continue
        options = []
        layer_specs = distinct_specs(info.shape, specs) if target is None else targets.layer_specs(target, name, info.shape, specs, info.kind)
        for oid, spec in layer_specs.items():
            if spec.format == "float":
                d = 0.0
            elif sens.options is None:
                d = sens.score * quantization_error(w, spec)
            elif oid in sens.options:
                d = float(sens.options[oid])
            else:
                raise UnknownLayer(
                    f"sensitivity table ({table.estimator}) measured no distortion for layer {name!r}, option {oid!r}; "
                    "rerun the estimator with the same candidate options"
                )
            d += activation_distortion(name, sens, spec, table.estimator)
            if routing_weight:
                d *= float((sens.model_extra or {}).get("routing_frequency", 1.0))
            bits = None if target is None else targets.option_bits(target, name, info.shape, spec)
            options.append(option_for(info.shape, info.macs, spec, d, oid, latency[name][oid] if latency else None, bits))
        out_layers.append(ProblemLayer(name=name, params=info.params, macs=info.macs, shape=list(info.shape), options=options))
    ties = [list(t) for t in ties]
    if target is not None:
        ties = _merge_ties(ties + targets.ties(target, names))
        out_layers = _common_options(out_layers, ties)
    if channel_groups > 1 and (ties or any(p.options for p in table.pairs)):
        raise DocumentError("ties and pairwise terms name whole layers; they cannot be combined with channel_groups > 1")
    present = {(l.name, o.id) for l in out_layers for o in l.options}  # each layer's own options (targets and
    # narrow layers drop some): a pair term names an option of both of its layers
    pairs = []
    for p in table.pairs:
        for po in p.options:
            if (p.a, po.option_a) in present and (p.b, po.option_b) in present:
                pairs.append(ProblemPair(a=p.a, option_a=po.option_a, b=p.b, option_b=po.option_b, distortion=po.distortion))
    return Problem(
        layers=out_layers, ties=ties, pairs=pairs, constraints=constraints,
        model=ModelRef(name=table.model.name, fingerprint=table.model.fingerprint), estimator=table.estimator,
    )


def _merge_ties(ties: list[list[str]]) -> list[list[str]]:
    """Ties sharing a layer merged into one (the problem refuses a layer in two ties)."""
    merged: list[set[str]] = []
    for t in ties:
        group = set(t)
        for other in [m for m in merged if m & group]:
            group |= other
            merged.remove(other)
        merged.append(group)
    order = {n: i for i, n in enumerate(n for t in ties for n in t)}
    return [sorted(g, key=order.__getitem__) for g in merged if len(g) > 1]


def _common_options(layers: list[ProblemLayer], ties: list[list[str]]) -> list[ProblemLayer]:
    """Tied layers keep only the option ids all of them have (float always stays)."""
    by_name = {l.name: l for l in layers}
    for tie in ties:
        common = set.intersection(*({o.id for o in by_name[n].options} for n in tie))
        for n in tie:
            l = by_name[n]
            by_name[n] = l.model_copy(update={"options": [o for o in l.options if o.id in common]})
    return [by_name[l.name] for l in layers]


def activation_distortion(name: str, sens, spec: QuantSpec, estimator: str) -> float:
    """The measured loss increase of quantizing the layer's input to ``spec.a_bits`` (0 for float activations)."""
    if spec.a_bits is None:
        return 0.0
    key = f"a{spec.a_bits}"
    if sens.activations is None or key not in sens.activations:
        raise UnknownLayer(
            f"sensitivity table ({estimator}) has no activation distortion {key!r} for layer {name!r}, so options "
            f"with a_bits={spec.a_bits} would look free; measure it with mpq.sensitivity.activation "
            "(mpq plan and mpq sensitivity do when --a-bits is given)"
        )
    return float(sens.activations[key])


def channel_slices(out_channels: int, groups: int) -> list[tuple[int, int]]:
    """Up to ``groups`` contiguous [start, stop) slices of the output channels, as equal as possible."""
    n = min(groups, out_channels)
    edges = [round(i * out_channels / n) for i in range(n + 1)]
    return [(a, b) for a, b in zip(edges[:-1], edges[1:]) if b > a]


def _channel_group_layers(name, info, sens, w, specs, groups: int, estimator: str, latency=None) -> list[ProblemLayer]:
    shape = list(info.shape)
    out = shape[0]
    specs = distinct_specs(shape, specs)
    whole = {}
    if sens.options is not None:
        for oid, spec in specs.items():
            if spec.format != "float":
                if oid not in sens.options:
                    raise UnknownLayer(f"sensitivity table ({estimator}) measured no distortion for layer {name!r}, option {oid!r}")
                whole[oid] = (float(sens.options[oid]), quantization_error(w, spec))
    layers = []
    for a, b in channel_slices(out, groups):
        part = w[a:b]
        sub_shape = [b - a, *shape[1:]]
        macs = info.macs * (b - a) // out
        options = []
        for oid, spec in specs.items():
            if spec.format == "float":
                d = 0.0
            elif sens.options is None:
                d = sens.score * quantization_error(part, spec)
            else:
                total, err = whole[oid]
                d = total * (quantization_error(part, spec) / err if err > 0 else (b - a) / out)
            d += activation_distortion(name, sens, spec, estimator) * (b - a) / out
            ms = latency[oid] * (b - a) / out if latency else None
            options.append(option_for(sub_shape, macs, spec, d, oid, ms))
        params = info.params * (b - a) // out
        layers.append(ProblemLayer(name=f"{name}[{a}:{b}]", params=params, macs=macs, shape=shape, module=name,
                                   channels=(a, b), options=options))
    return layers
