"""The columnar form of ``mpq.plan/v1`` (``mpq.plan-columns/v1``): one entry per layer, for plans of 100k+ groups.

A ``.npz`` file (numpy, no pickle) holds the same content as the JSON plan: the layer arrays of the
columnar problem (``layer_name``, ``layer_params``, ``layer_shape``, ``layer_module``, ``layer_channels``),
the chosen option of each layer in the columnar problem's option columns (``row_option`` indexes
``option_names``, ``row_format``/``row_structure`` index the formats and prune structures, ``w_bits`` ..
``distortion``; 0, -1 and NaN mean null as there), and a JSON ``header`` with the totals, constraints,
solver, provenance and ``pair_distortion`` (pairwise terms counted in the total distortion). It is written from a solved columnar problem and read back with whole-array
operations only; loading checks every array once, and the totals against the columns.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
from pydantic import ValidationError

from ._gc import gc_paused
from .columnar import COLUMN_MEANING, check_names, check_option_columns, formats, read_header, read_npz, structures
from .errors import DocumentError
from .plan import plan_layers
from .schema import PLAN_SCHEMA, Plan, PlanLayer, Provenance, SolverInfo, Totals, format_validation_error

PLAN_COLUMNS_SCHEMA = "mpq.plan-columns/v1"

#: array name -> numpy kind letters accepted; every array has one entry per layer but ``option_names``
ARRAYS = {
    "layer_name": "U", "layer_params": "iu", "layer_shape": "iu", "layer_module": "U", "layer_channels": "iu",
    "option_names": "U", "row_option": "iu", "row_format": "iu", "row_structure": "iu", "w_bits": "iu",
    "group_size": "iu", "symmetric": "b", "prune_ratio": "f", "a_bits": "iu", "bits": "iu", "bytes": "iu",
    "bitops": "iu", "latency_ms": "f", "distortion": "f",
}
#: arrays taken from the problem's layer arrays, and from the chosen row of each layer
LAYER_ARRAYS = ("layer_name", "layer_params", "layer_shape", "layer_module", "layer_channels")
ROW_ARRAYS = tuple(k for k in ARRAYS if k not in LAYER_ARRAYS and k != "option_names")


#: what each array holds (``mpq schema plan-columns`` prints these): the problem's columns, one chosen row per layer
MEANING = {**COLUMN_MEANING, "row_option": "chosen option id, index into option_names"}
_KIND_NAMES = {"U": "str", "iu": "int", "f": "float", "b": "bool"}


def describe() -> dict:
    """The layout of ``mpq.plan-columns/v1``: its header (a JSON string) and its arrays."""
    from .columnar import formats, structures

    return {
        "schema": PLAN_COLUMNS_SCHEMA, "container": "numpy .npz (uncompressed, no pickle); the JSON form is mpq.plan/v1",
        "header": {
            "type": "JSON string",
            "properties": {"schema": PLAN_COLUMNS_SCHEMA, "totals": Totals.model_json_schema(), "constraints": "constraint name -> value",
                           "solver": SolverInfo.model_json_schema(), "provenance": Provenance.model_json_schema(),
                           "pair_distortion": "pairwise terms counted in totals.distortion (0 without pairs)"},
        },
        "arrays": {k: {"dtype": _KIND_NAMES[kinds], "entries": "option table" if k == "option_names" else "one per layer",
                       "meaning": MEANING[k]} for k, kinds in ARRAYS.items()},
        "formats": formats(), "structures": structures(),
    }


@dataclass
class PlanColumns:
    """A plan as columns (see the module docstring); ``to_plan()`` gives the JSON model."""

    arrays: dict[str, np.ndarray]
    totals: Totals
    constraints: dict[str, float]
    solver: SolverInfo
    provenance: Provenance
    pair_distortion: float = 0.0  # pairwise terms in totals.distortion beyond the layers' own

    @property
    def n_layers(self) -> int:
        return int(self.arrays["layer_name"].shape[0])

    @classmethod
    def from_rows(cls, problem_arrays: dict[str, np.ndarray], rows: np.ndarray, constraints: dict[str, float],
                  solver: SolverInfo, provenance: Provenance) -> "PlanColumns":
        """The plan that takes row ``rows[i]`` of a columnar problem for layer ``i`` (totals summed here)."""
        a = {k: problem_arrays[k] for k in LAYER_ARRAYS}
        a["option_names"] = problem_arrays["option_names"]
        for k in ROW_ARRAYS:
            a[k] = problem_arrays[k][rows]
        return cls(a, column_totals(a), dict(constraints), solver, provenance)

    @classmethod
    def from_plan(cls, plan: Plan) -> "PlanColumns":
        """Columns of a JSON plan (a Python loop over its layers: for plans that are already objects)."""
        layers = plan.layers
        names = sorted({l.option for l in layers})
        index = {n: k for k, n in enumerate(names)}
        fmts, structs = formats(), structures()
        depth = max((len(l.shape) for l in layers if l.shape), default=0)
        shape = np.zeros((len(layers), depth), dtype=np.int64)
        for i, l in enumerate(layers):
            if l.shape:
                shape[i, : len(l.shape)] = l.shape
        a = {
            "layer_name": np.array([l.name for l in layers], dtype=str),
            "layer_params": np.array([l.params for l in layers], dtype=np.int64),
            "layer_shape": shape,
            "layer_module": np.array([l.module or "" for l in layers], dtype=str),
            "layer_channels": np.array([list(l.channels) if l.channels else [-1, -1] for l in layers], dtype=np.int64).reshape(-1, 2),
            "option_names": np.array(names, dtype=str),
            "row_option": np.array([index[l.option] for l in layers], dtype=np.int64),
            "row_format": np.array([fmts.index(l.format) for l in layers], dtype=np.int64),
            "row_structure": np.array([structs.index(l.prune_structure) for l in layers], dtype=np.int64),
            "w_bits": np.array([l.w_bits for l in layers], dtype=np.int64),
            "group_size": np.array([l.group_size or 0 for l in layers], dtype=np.int64),
            "symmetric": np.array([l.symmetric for l in layers], dtype=bool),
            "prune_ratio": np.array([l.prune_ratio for l in layers], dtype=np.float64),
            "a_bits": np.array([l.a_bits or 0 for l in layers], dtype=np.int64),
            "bits": np.array([l.bits if l.bits is not None else 8 * l.bytes for l in layers], dtype=np.int64),
            "bytes": np.array([l.bytes for l in layers], dtype=np.int64),
            "bitops": np.array([-1 if l.bitops is None else l.bitops for l in layers], dtype=np.int64),
            "latency_ms": np.array([np.nan if l.latency_ms is None else l.latency_ms for l in layers], dtype=np.float64),
            "distortion": np.array([l.distortion for l in layers], dtype=np.float64),
        }
        pair_distortion = plan.totals.distortion - float(a["distortion"].sum())
        return cls(a, plan.totals, dict(plan.constraints), plan.solver, plan.provenance, pair_distortion)

    def to_plan(self) -> Plan:
        """The JSON plan (one object per layer: for plans small enough to export or apply)."""
        a = self.arrays
        fmts, structs = formats(), structures()
        names = a["option_names"][a["row_option"]]
        layers = []
        for i in range(self.n_layers):
            shape = [int(s) for s in a["layer_shape"][i] if s > 0] or None
            ch = a["layer_channels"][i]
            gs, ab, bo, lat = int(a["group_size"][i]), int(a["a_bits"][i]), int(a["bitops"][i]), float(a["latency_ms"][i])
            layers.append(dict(
                name=str(a["layer_name"][i]), module=str(a["layer_module"][i]) or None,
                channels=(int(ch[0]), int(ch[1])) if ch[0] >= 0 else None, params=int(a["layer_params"][i]), shape=shape,
                option=str(names[i]), w_bits=int(a["w_bits"][i]), group_size=gs or None, format=fmts[int(a["row_format"][i])],
                symmetric=bool(a["symmetric"][i]), prune_ratio=float(a["prune_ratio"][i]),
                prune_structure=structs[int(a["row_structure"][i])], a_bits=ab or None, bits=int(a["bits"][i]),
                bytes=int(a["bytes"][i]), bitops=None if bo < 0 else bo, latency_ms=None if math.isnan(lat) else lat,
                distortion=float(a["distortion"][i]),
            ))
        try:
            return Plan(layers=plan_layers().validate_python(layers), totals=self.totals, constraints=self.constraints,
                        solver=self.solver, provenance=self.provenance)
        except ValidationError as e:
            raise DocumentError(format_validation_error(e, "columnar plan")) from None

    def json_text(self) -> str:
        """The ``mpq.plan/v1`` text, as ``dump_document(self.to_plan())`` writes it, without a model per layer.

        The columns hold what the JSON model holds (they come from a validated problem or a checked file),
        so the layers go straight to pydantic-core's serializer, the one the models themselves use.
        """
        with gc_paused():  # a few containers per layer, none cyclic, all freed before collection resumes
            return self._json_bytes().decode() + "\n"

    def write_json(self, f) -> None:
        """Write the ``mpq.plan/v1`` text of :meth:`json_text` to an open binary file (no copy of it as ``str``)."""
        with gc_paused():
            body = self._json_bytes()
        f.write(body)
        f.write(b"\n")

    def _json_bytes(self) -> bytes:
        from pydantic_core import to_json

        a = self.arrays
        n = self.n_layers
        fmts, structs = formats(), structures()

        def nulled(column: np.ndarray, null) -> list:
            values = column.tolist()
            return [None if v == null else v for v in values] if null in values else values

        latency, shape, channels, modules = a["latency_ms"], a["layer_shape"], a["layer_channels"], a["layer_module"]
        columns = {
            "name": a["layer_name"].tolist(),
            "module": [m or None for m in modules.tolist()] if (modules != "").any() else [None] * n,
            "channels": [c if c[0] >= 0 else None for c in channels.tolist()] if (channels[:, 0] >= 0).any() else [None] * n,
            "params": a["layer_params"].tolist(),
            "shape": (shape.tolist() if shape.shape[1] and (shape > 0).all()
                      else [[d for d in s if d > 0] or None for s in shape.tolist()]),
            "option": a["option_names"][a["row_option"]].tolist(), "w_bits": a["w_bits"].tolist(),
            "group_size": nulled(a["group_size"], 0), "format": [fmts[k] for k in a["row_format"].tolist()],
            "symmetric": a["symmetric"].tolist(), "prune_ratio": a["prune_ratio"].tolist(),
            "prune_structure": [structs[k] for k in a["row_structure"].tolist()], "a_bits": nulled(a["a_bits"], 0),
            "bits": a["bits"].tolist(), "bytes": a["bytes"].tolist(), "bitops": nulled(a["bitops"], -1),
            "latency_ms": [None if v != v else v for v in latency.tolist()] if np.isnan(latency).any() else latency.tolist(),
            "distortion": a["distortion"].tolist(),
        }
        fields = tuple(PlanLayer.model_fields)  # the model's field order
        layers = [dict(zip(fields, values)) for values in zip(*(columns[f] for f in fields))]
        doc = {"schema": PLAN_SCHEMA, "layers": layers, "totals": self.totals.model_dump(), "constraints": self.constraints,
               "solver": self.solver.model_dump(), "provenance": self.provenance.model_dump()}
        return to_json(doc, indent=2)

    def header(self) -> dict:
        return {
            "schema": PLAN_COLUMNS_SCHEMA, "totals": self.totals.model_dump(), "constraints": self.constraints,
            "solver": self.solver.model_dump(), "provenance": self.provenance.model_dump(),
            "pair_distortion": self.pair_distortion,
        }

    def write(self, f) -> None:
        """Write to an open binary file as an uncompressed ``.npz``."""
        from .npz import write_arrays

        write_arrays(f, {"header": np.array(json.dumps(self.header())), **self.arrays})

    def save(self, path: str | Path) -> Path:
        """Write atomically as an uncompressed ``.npz``."""
        from .output import write_output

        return write_output(path, self.write)


def column_totals(a: dict[str, np.ndarray], pair_distortion: float = 0.0) -> Totals:
    """The plan's totals from its columns, as :mod:`mpq.sizes` counts them (a null anywhere makes the total null)."""
    params = int(a["layer_params"].sum())
    bitops = None if (a["bitops"] < 0).any() else int(a["bitops"].sum())
    latency = None if np.isnan(a["latency_ms"]).any() else float(a["latency_ms"].sum())
    return Totals(bytes=int(a["bytes"].sum()), avg_bits=float(a["bits"].sum()) / params if params else 0.0,
                  bitops=bitops, latency_ms=latency, distortion=float(a["distortion"].sum()) + pair_distortion)


def load_plan_columns(path: str | Path) -> PlanColumns:
    """Read and validate a columnar plan; every error names the array and the layer."""
    return validate_plan_columns(read_npz(path, "columnar plan"), str(path))


def validate_plan_columns(data: dict[str, np.ndarray], source: str = "columnar plan") -> PlanColumns:
    def fail(msg: str) -> DocumentError:
        return DocumentError(f"invalid {source}: {msg}")

    header = read_header(data, PLAN_COLUMNS_SCHEMA, fail)
    got = header.get("schema") if isinstance(header, dict) else None
    if got != PLAN_COLUMNS_SCHEMA:
        hint = " (that is the JSON plan's schema)" if got == PLAN_SCHEMA else ""
        raise fail(f"header.schema: unsupported version {got!r}{hint}; expected {PLAN_COLUMNS_SCHEMA!r}")
    for name, kinds in ARRAYS.items():
        if name not in data:
            raise fail(f"{name}: array required")
        if data[name].dtype.kind not in kinds:
            raise fail(f"{name}: expected dtype kind {kinds!r}, got {data[name].dtype}")
    unknown = sorted(set(data) - set(ARRAYS) - {"header"})
    if unknown:
        raise fail(f"unknown arrays {unknown}; expected {sorted(ARRAYS)} and header")
    names = data["layer_name"]
    L = names.shape[0] if names.ndim == 1 else 0
    if L == 0:
        raise fail("layer_name: expected a non-empty 1-d array of layer names")
    for name in ARRAYS:
        if name != "option_names" and data[name].shape[:1] != (L,):
            raise fail(f"{name}: expected {L} entries (one per layer), got shape {data[name].shape}")
    if data["layer_shape"].ndim != 2 or data["layer_channels"].shape != (L, 2):
        raise fail("layer_shape must be (layers, dims) and layer_channels (layers, 2)")
    a = {k: v for k, v in data.items() if k != "header"}

    def where(i: int) -> str:
        return f"layer {str(names[i])!r}"

    def check(bad: np.ndarray, what: str, at=where) -> None:
        idx = np.flatnonzero(bad)
        if idx.size:
            raise fail(f"{what} at {at(int(idx[0]))}" + (f" and {idx.size - 1} more" if idx.size > 1 else ""))

    check((a["row_option"] < 0) | (a["row_option"] >= a["option_names"].size), "row_option: must index option_names")
    check(a["option_names"] == "", "option_names: empty option id", lambda i: f"entry {i}")
    check_option_columns(a, check)
    check(a["layer_params"] < 0, "layer_params: must be non-negative")
    check((a["layer_shape"] < 0).any(axis=1), "layer_shape: must be non-negative (0 pads)")
    check_names(names, fail)
    try:
        totals = Totals(**header["totals"])
        solver = SolverInfo(**header["solver"])
        provenance = Provenance(**(header.get("provenance") or {}))
        constraints = {str(k): float(v) for k, v in (header.get("constraints") or {}).items()}
        pair_distortion = float(header.get("pair_distortion") or 0.0)
    except (ValidationError, TypeError, KeyError, ValueError) as e:
        raise fail(f"header: {e}") from None
    counted = column_totals(a, pair_distortion)
    for field in ("bytes", "avg_bits", "bitops", "latency_ms", "distortion"):
        mine, theirs = getattr(counted, field), getattr(totals, field)
        same = mine == theirs if mine is None or theirs is None else math.isclose(mine, theirs, rel_tol=1e-9, abs_tol=1e-12)
        if not same:
            raise fail(f"header.totals.{field}: {theirs} does not match the columns, which sum to {mine}")
    return PlanColumns(a, totals, constraints, solver, provenance, pair_distortion)


def load_plan(path: str | Path) -> Plan:
    """A plan from ``.json`` (``mpq.plan/v1``) or its columnar ``.npz`` form, as the JSON model."""
    from .schema import load_document

    if str(path).endswith(".npz"):
        return load_plan_columns(path).to_plan()
    return load_document(path, Plan)


def save_plan(plan, path: str | Path) -> Path:
    """Write a plan (JSON model or columns) as ``.npz`` columns or ``.json``, by the file's suffix."""
    from .schema import save_document

    path = Path(path)
    if path.suffix == ".npz":
        cols = plan if isinstance(plan, PlanColumns) else PlanColumns.from_plan(plan)
        return cols.save(path)
    if isinstance(plan, PlanColumns):
        from .output import write_output

        return write_output(path, plan.write_json)
    save_document(plan, path)
    return path
