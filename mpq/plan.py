"""Plans: build one from a choice of option per layer, recount its size, check it against constraints."""
from __future__ import annotations

import datetime as _dt
import functools
import math
from typing import Mapping, Optional

from pydantic import TypeAdapter

from . import __version__
from .errors import DocumentError, UnknownLayer
from .schema import RESOURCES, STORAGE_FIELDS, Constraints, Plan, PlanLayer, Problem, Provenance, SolverInfo, Totals
from .sizes import to_bytes, weight_bits


@functools.cache
def plan_layers() -> TypeAdapter:
    """The validator of a list of plan layers (all rows in one call), built on first use, not on import."""
    return TypeAdapter(list[PlanLayer])


#: Option fields a plan layer carries as they are: the storage fields and the costs.
_CARRIED = (*STORAGE_FIELDS, "bytes", "bitops", "latency_ms", "distortion")


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def build_plan(
    problem: Problem,
    choice: Mapping[str, str],
    solver: SolverInfo,
    *,
    provenance: Optional[Provenance] = None,
) -> Plan:
    """The ``mpq.plan/v1`` for ``choice`` (layer name -> option id), with totals as :mod:`mpq.sizes` counts them."""
    layers = []
    for l in problem.layers:
        if l.name not in choice:
            raise UnknownLayer(f"the choice has no option for layer {l.name!r}")
        try:
            o = l.option(choice[l.name])
        except KeyError:
            raise UnknownLayer(f"layer {l.name!r} has no option {choice[l.name]!r}") from None
        layers.append(dict(
            name=l.name, module=l.module, channels=l.channels, params=l.params, shape=l.shape, option=o.id,
            **{f: getattr(o, f) for f in _CARRIED}, bits=o.bits,
        ))
    layers = plan_layers().validate_python(layers)  # all rows in one call: the service builds a plan per request
    totals = totals_of(layers)
    prov = provenance or Provenance(estimator=problem.estimator, model=problem.model)
    if not prov.mpq_version:
        prov = prov.model_copy(update={"mpq_version": __version__})
    if not prov.created:
        prov = prov.model_copy(update={"created": now()})
    return Plan(layers=layers, totals=totals, constraints=problem.constraints.active(), solver=solver, provenance=prov)


def _sum_or_none(values) -> Optional[float]:
    values = list(values)
    return None if any(v is None for v in values) else sum(values)


def totals_of(layers: list[PlanLayer], pair_distortion: float = 0.0) -> Totals:
    params = sum(l.params for l in layers)
    bits = sum(l.bits if l.bits is not None else 8 * l.bytes for l in layers)
    bitops = _sum_or_none(l.bitops for l in layers)
    latency = _sum_or_none(l.latency_ms for l in layers)
    return Totals(
        bytes=sum(l.bytes for l in layers),
        avg_bits=bits / params if params else 0.0,
        bitops=int(bitops) if bitops is not None else None,
        latency_ms=latency,
        distortion=sum(l.distortion for l in layers) + pair_distortion,
    )


def violations(totals: Totals, constraints: Mapping[str, float] | Constraints, rel_tol: float = 1e-12) -> list[str]:
    """Constraints the totals break, as readable strings (empty when the plan fits)."""
    if isinstance(constraints, Constraints):
        constraints = constraints.active()
    out = []
    for name, cap in constraints.items():
        total = RESOURCES[name].total
        value = getattr(totals, total)
        if value is None:
            out.append(f"{name}={cap:g}: the plan has no {total} for some layer")
        elif value > cap * (1 + rel_tol):
            out.append(f"{name}={cap:g}: the plan has {total}={value:g}")
    return out


def recount_bits(layer: PlanLayer, include_scales: bool = True) -> int:
    """Weight bits of a plan layer recomputed from its shape and option (the size convention of :mod:`mpq.sizes`)."""
    if layer.shape is None:
        raise DocumentError(f"layer {layer.name!r}: no shape, so its size cannot be recounted")
    shape = list(layer.shape)
    if layer.channels is not None:
        shape[0] = layer.channels[1] - layer.channels[0]
    return weight_bits(shape, layer.w_bits, layer.group_size, layer.format, layer.symmetric, layer.prune_ratio, include_scales)


def recount(plan: Plan) -> dict[str, float]:
    """Independent recount of the plan's bytes and average bits from shapes and options."""
    bits = [recount_bits(l) for l in plan.layers]
    params = sum(l.params for l in plan.layers)
    return {"bytes": sum(to_bytes(b) for b in bits), "avg_bits": sum(bits) / params if params else math.nan}


# ``mpq.plan(...)`` calls :func:`mpq.api.plan` (this module stays importable as before).
from ._entry import make_callable as _make_callable  # noqa: E402

_make_callable(__name__, "plan")
