"""Reading an ``mpq.problem/v1`` JSON document straight into columns, without a pydantic object per option.

The JSON models of :mod:`mpq.schema` are the published schema and the judge of what is valid, but
validating one model per option costs more than solving a 10,000-layer problem. :func:`read_columns`
parses the text once (pydantic-core's JSON parser, already a core dependency), takes each field as
one column and checks types and ranges a column at a time. It returns a
:class:`~mpq.columnar.ProblemColumns` only when the document passes every check the models make, so
that the models would accept it and give the same values. Anything else returns ``None`` and the
caller reads the document with the models: an invalid document (whose error must name the layer
and the field as the models do), a form it does not take on (ties and pairs, which name layers and
options; a number written as ``4.0`` where an integer goes), or a field it does not know. So every
error a user sees comes from the models, by construction; tests/mpq/test_problem_json.py compares
the two readers on generated valid and invalid documents.
"""
from __future__ import annotations

import math
from itertools import chain
from operator import itemgetter
from typing import Any, Optional, Sequence

import numpy as np

from ._gc import gc_paused
from .columnar import ProblemColumns, check_option_columns, check_size_sums, first_duplicate, formats, structures
from .schema import (MAX_SIZE, NUMBER_FORMATS, PROBLEM_SCHEMA, PRUNE_STRUCTURES, Constraints, ModelRef, Option, Problem,
                     ProblemLayer)

#: the fields this reader takes, per object; if a model gains a field, the reader steps aside until it learns it
PROBLEM_FIELDS = frozenset({"schema", "layers", "ties", "pairs", "constraints", "model", "estimator"})
LAYER_FIELDS = frozenset({"name", "params", "macs", "shape", "module", "channels", "options"})
OPTION_FIELDS = frozenset({"id", "w_bits", "group_size", "format", "symmetric", "prune_ratio", "prune_structure", "a_bits",
                           "bits", "bytes", "bitops", "latency_ms", "distortion"})
KNOWS_THE_MODELS = (PROBLEM_FIELDS == {f.alias or n for n, f in Problem.model_fields.items()}
                    and LAYER_FIELDS == set(ProblemLayer.model_fields) and OPTION_FIELDS == set(Option.model_fields))

_INT64_MAX = int(np.iinfo(np.int64).max)
_NONE = type(None)


class _StepAside(Exception):
    """The document is not one this reader takes on: the JSON models read it (and name any error)."""


def need(ok: Any) -> None:
    if not ok:
        raise _StepAside


def read_columns(text: bytes | str) -> Optional[ProblemColumns]:
    """The columns of a valid ``mpq.problem/v1`` without ties or pairs, or ``None``: read it with the JSON models."""
    if not KNOWS_THE_MODELS:
        return None
    from pydantic_core import from_json

    with gc_paused():
        try:
            doc = from_json(text, allow_inf_nan=False)
        except ValueError:  # not JSON, NaN or Infinity written: the models' reader names where
            return None
        try:
            return _columns(doc)
        except (_StepAside, KeyError, OverflowError):  # KeyError: a required field is missing; Overflow: past int64
            return None
        finally:
            del doc  # inside the pause: a collection would walk every object of the document first


def _types(values: list, allowed: tuple) -> None:
    """Every value is exactly one of ``allowed`` (``bool`` is not an ``int`` here: the models refuse it)."""
    need(set(map(type, values)).issubset(allowed))


def _defaults(model) -> dict[str, Any]:
    """The optional fields of a model and their defaults, as the model declares them."""
    return {n: f.default for n, f in model.model_fields.items() if not f.is_required()}


def _table(rows: list[dict], fields: frozenset, defaults: dict[str, Any]) -> dict[str, tuple]:
    """Each field of every row as a column; a row's missing optional field takes its default.

    A row with an unknown field steps aside. When every row writes every field (as ``mpq`` writes
    documents), the columns come from one C-level pass.
    """
    order = tuple(sorted(fields))
    if set(map(len, rows)) == {len(order)}:
        try:
            return dict(zip(order, zip(*map(itemgetter(*order), rows))))
        except KeyError:  # a row lacks a field and has another instead: the general path finds which
            pass
    need(all(r.keys() <= fields for r in rows))
    return {f: tuple(map(itemgetter(f), rows)) if f not in defaults else tuple(r.get(f, defaults[f]) for r in rows)
            for f in order}


def _ints(values: Sequence, lo: int, hi: int, null: Optional[int] = None) -> np.ndarray:
    """Integers in ``[lo, hi]`` (``hi`` at most 2**63 - 1) as int64; with ``null``, nulls too, written as ``null``."""
    kinds = set(map(type, values))
    if null is None or _NONE not in kinds:
        need(kinds <= {int})
        a = np.array(values, dtype=np.int64) if values else np.zeros(0, dtype=np.int64)
        need(a.size == 0 or (int(a.min()) >= lo and int(a.max()) <= hi))
        return a
    need(kinds <= {int, _NONE})
    if kinds == {_NONE}:
        return np.full(len(values), null, dtype=np.int64)
    a = np.array([null if v is None else v for v in values], dtype=np.int64)
    given = a[np.array([v is not None for v in values])]
    need(given.size == 0 or (int(given.min()) >= lo and int(given.max()) <= hi))
    return a


def _floats(values: Sequence, nullable: bool = False) -> np.ndarray:
    """Finite numbers (integers become floats, as the models convert them); nulls (when ``nullable``) become NaN."""
    kinds = set(map(type, values))
    if nullable and _NONE in kinds:
        need(kinds <= {int, float, _NONE})
        if kinds == {_NONE}:
            return np.full(len(values), math.nan)
        a = np.array([math.nan if v is None else v for v in values], dtype=np.float64)
        need(np.isfinite(a[~np.isnan(a)]).all())
        return a
    need(kinds <= {int, float})
    a = np.array(values, dtype=np.float64)
    need(np.isfinite(a).all())
    return a


def _strings(values: list, nonempty: bool = True) -> list:
    _types(values, (str,))
    need(not nonempty or "" not in values)
    return values


def _constraints(value: Any) -> Constraints:
    need(type(value) is dict and value.keys() <= Constraints.model_fields.keys())
    _types(list(value.values()), (int, float, _NONE))
    need(all(v is None or (math.isfinite(v) and v > 0) for v in value.values()))
    constraints = Constraints(**value)
    need(constraints.active())
    return constraints


def _model(value: Any) -> Optional[ModelRef]:
    if value is None:
        return None
    need(type(value) is dict and value.keys() <= ModelRef.model_fields.keys())
    need(type(value.get("name", "")) is str and type(value.get("fingerprint")) in (str, _NONE))
    return ModelRef(**value)


def _columns(doc: Any) -> ProblemColumns:
    need(type(doc) is dict and doc.keys() <= PROBLEM_FIELDS and doc.get("schema") == PROBLEM_SCHEMA)
    for name in ("ties", "pairs"):  # they name layers and options: the models check those references
        need(type(doc.get(name, [])) is list and not doc.get(name))
    constraints = _constraints(doc["constraints"])
    model = _model(doc.get("model"))
    estimator = doc.get("estimator")
    need(type(estimator) in (str, _NONE))

    layers = doc["layers"]
    need(type(layers) is list and layers)
    _types(layers, (dict,))
    lt = _table(layers, LAYER_FIELDS, _defaults(ProblemLayer))
    names = _strings(lt["name"])
    need(len(set(names)) == len(names))
    L = len(layers)

    per_layer = lt["options"]
    _types(per_layer, (list,))
    counts = np.fromiter(map(len, per_layer), dtype=np.int64, count=L)
    need(int(counts.min()) >= 1)
    options = list(chain.from_iterable(per_layer))
    _types(options, (dict,))
    ot = _table(options, OPTION_FIELDS, _defaults(Option))

    ids = _strings(ot["id"])
    option_names = sorted(set(ids))
    index = {n: k for k, n in enumerate(option_names)}
    row_layer = np.repeat(np.arange(L, dtype=np.int64), counts)
    row_option = np.fromiter(map(index.__getitem__, ids), dtype=np.int64, count=len(ids))
    need(first_duplicate(row_layer * (len(option_names) + 1) + row_option) is None)  # an option id twice in a layer

    fmt_index = {f: k for k, f in enumerate(formats())}
    structure_index = {s: k for k, s in enumerate(structures())}
    fmts = _strings(ot["format"])
    need(set(fmts) <= NUMBER_FORMATS.keys())
    structs = _strings(ot["prune_structure"])
    need(set(structs) <= PRUNE_STRUCTURES.keys())
    _types(ot["symmetric"], (bool,))
    nbytes = _ints(ot["bytes"], 0, MAX_SIZE)
    bits = ot["bits"]
    if None in bits:  # the models' default: 8 * bytes
        bits = [8 * b if v is None else v for v, b in zip(bits, nbytes.tolist())]
    a = {
        "row_layer": row_layer, "row_option": row_option,
        "row_format": np.fromiter(map(fmt_index.__getitem__, fmts), dtype=np.int64, count=len(fmts)),
        "row_structure": np.fromiter(map(structure_index.__getitem__, structs), dtype=np.int64, count=len(structs)),
        "w_bits": _ints(ot["w_bits"], 1, 32),
        "group_size": _ints(ot["group_size"], 1, _INT64_MAX, null=0),
        "symmetric": np.array(ot["symmetric"], dtype=bool),
        "prune_ratio": _floats(ot["prune_ratio"]),
        "a_bits": _ints(ot["a_bits"], 1, 32, null=0),
        "bits": _ints(bits, 0, MAX_SIZE), "bytes": nbytes,
        "bitops": _ints(ot["bitops"], 0, MAX_SIZE, null=-1),
        "latency_ms": _floats(ot["latency_ms"], nullable=True),
        "distortion": _floats(ot["distortion"]),
    }

    def step_aside(bad: np.ndarray, what: str, where=None) -> None:
        need(not np.asarray(bad).any())

    check_option_columns(a, step_aside)  # ranges, bytes = ceil(bits/8), each format's bits, 2:4 means 0.5
    a.update(_layer_columns(lt, L))
    a["option_names"] = np.array(option_names, dtype=str)
    check_size_sums(a, _StepAside)
    for name, null in (("max_bitops", a["bitops"] < 0), ("max_latency_ms", np.isnan(a["latency_ms"]))):
        need(name not in constraints.active() or not null.any())  # compiling names the null, on the models' path
    need(constraints.max_avg_bits is None or int(a["layer_params"].sum()) > 0)
    return ProblemColumns(a, constraints, [], [], model, estimator)


def _layer_columns(lt: dict[str, tuple], L: int) -> dict[str, np.ndarray]:
    """The per-layer arrays, laid out as :meth:`ProblemColumns.from_problem` lays them out."""
    shapes = lt["shape"]
    _types(shapes, (list, _NONE))
    given = [s for s in shapes if s is not None]
    need(all(given))  # an empty shape has no columnar form
    _ints(list(chain.from_iterable(given)), 1, _INT64_MAX)
    depth = max(map(len, given), default=0)
    shape = np.zeros((L, depth), dtype=np.int64)
    if given and len(given) == L and set(map(len, given)) == {depth}:
        shape[:] = given
    else:
        for i, s in enumerate(shapes):
            if s is not None:
                shape[i, : len(s)] = s
    modules = lt["module"]
    _types(modules, (str, _NONE))
    need("" not in modules)  # columns write no module as "": an empty name would come back as none
    channels = lt["channels"]
    _types(channels, (list, _NONE))
    spans = [c for c in channels if c is not None]
    need(all(len(c) == 2 for c in spans))
    ends = _ints(list(chain.from_iterable(spans)), 0, MAX_SIZE).reshape(-1, 2)
    need((ends[:, 0] < ends[:, 1]).all())
    channel_rows = np.full((L, 2), -1, dtype=np.int64)
    if spans:
        channel_rows[[i for i, c in enumerate(channels) if c is not None]] = ends
    return {
        "layer_name": np.array(lt["name"], dtype=str),
        "layer_params": _ints(lt["params"], 0, MAX_SIZE),
        "layer_macs": _ints(lt["macs"], 0, MAX_SIZE),
        "layer_shape": shape,
        "layer_module": np.array([m or "" for m in modules], dtype=str),
        "layer_channels": channel_rows,
    }
