"""The columnar form of ``mpq.problem/v1``: one row per (layer, option), for problems too big for JSON.

A ``.npz`` file (numpy, no pickle) holds the same content as the JSON problem: per-layer arrays
(``layer_*``), per-row arrays (``row_*`` plus option fields), categorical tables for option ids
and formats, and a small JSON ``header`` with the constraints, ties, pairs, model and estimator.
Rows are grouped by layer in layer order. Loading validates every array once, with errors that
name the array, the row and the layer; past that, solvers use the arrays directly.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
from pydantic import ValidationError

from .errors import DocumentError
from .schema import (MAX_SIZE, NUMBER_FORMATS, PROBLEM_SCHEMA, PRUNE_STRUCTURES, Constraints, ModelRef, Option, Problem,
                     ProblemLayer, ProblemPair, format_validation_error)

COLUMNS_SCHEMA = "mpq.problem-columns/v1"


def formats() -> list[str]:
    """``row_format`` indexes this list: the schema's formats in registration order."""
    return list(NUMBER_FORMATS)


def structures() -> list[str]:
    """``row_structure`` indexes this list: the schema's prune structures."""
    return list(PRUNE_STRUCTURES)

#: array name -> (numpy kind letters accepted, per "layer" or "row")
ARRAYS = {
    "layer_name": ("U", "layer"), "layer_params": ("iu", "layer"), "layer_macs": ("iu", "layer"),
    "layer_shape": ("iu", "layer"), "layer_module": ("U", "layer"), "layer_channels": ("iu", "layer"),
    "row_layer": ("iu", "row"), "row_option": ("iu", "row"), "row_format": ("iu", "row"), "row_structure": ("iu", "row"),
    "w_bits": ("iu", "row"), "group_size": ("iu", "row"), "symmetric": ("b", "row"), "prune_ratio": ("f", "row"),
    "a_bits": ("iu", "row"), "bits": ("iu", "row"), "bytes": ("iu", "row"), "bitops": ("iu", "row"),
    "latency_ms": ("f", "row"), "distortion": ("f", "row"), "option_names": ("U", "table"),
}


@dataclass
class ProblemColumns:
    """A problem as columns. ``group_size``/``a_bits`` 0, ``bitops`` -1 and ``latency_ms`` NaN mean null;
    ``layer_shape`` rows are zero-padded (all zero: no shape); ``layer_channels`` -1: not a slice."""

    arrays: dict[str, np.ndarray]
    constraints: Constraints
    ties: list[list[str]] = field(default_factory=list)
    pairs: list[ProblemPair] = field(default_factory=list)
    model: Optional[ModelRef] = None
    estimator: Optional[str] = None

    @property
    def n_layers(self) -> int:
        return int(self.arrays["layer_name"].shape[0])

    @property
    def n_rows(self) -> int:
        return int(self.arrays["row_layer"].shape[0])

    @property
    def total_params(self) -> int:
        return int(self.arrays["layer_params"].sum())

    def offsets(self) -> np.ndarray:
        """First row of each layer, and the end (length ``n_layers + 1``)."""
        counts = np.bincount(self.arrays["row_layer"], minlength=self.n_layers)
        return np.concatenate([[0], np.cumsum(counts)])

    # ------------------------------------------------------------------------------------------
    # conversions

    @classmethod
    def from_problem(cls, problem: Problem) -> "ProblemColumns":
        names = [l.name for l in problem.layers]
        rows = [(i, o) for i, l in enumerate(problem.layers) for o in l.options]
        fmt_index = {f: k for k, f in enumerate(formats())}
        structure_index = {f: k for k, f in enumerate(structures())}
        option_names = sorted({o.id for _, o in rows})
        index = {n: k for k, n in enumerate(option_names)}
        depth = max((len(l.shape) for l in problem.layers if l.shape), default=0)
        shape = np.zeros((len(names), depth), dtype=np.int64)
        for i, l in enumerate(problem.layers):
            if l.shape:
                shape[i, : len(l.shape)] = l.shape
        a = {
            "layer_name": np.array(names, dtype=str),
            "layer_params": np.array([l.params for l in problem.layers], dtype=np.int64),
            "layer_macs": np.array([l.macs for l in problem.layers], dtype=np.int64),
            "layer_shape": shape,
            "layer_module": np.array([l.module or "" for l in problem.layers], dtype=str),
            "layer_channels": np.array([list(l.channels) if l.channels else [-1, -1] for l in problem.layers], dtype=np.int64).reshape(-1, 2),
            "option_names": np.array(option_names, dtype=str),
            "row_layer": np.array([i for i, _ in rows], dtype=np.int64),
            "row_option": np.array([index[o.id] for _, o in rows], dtype=np.int64),
            "row_format": np.array([fmt_index[o.format] for _, o in rows], dtype=np.int64),
            "row_structure": np.array([structure_index[o.prune_structure] for _, o in rows], dtype=np.int64),
            "w_bits": np.array([o.w_bits for _, o in rows], dtype=np.int64),
            "group_size": np.array([o.group_size or 0 for _, o in rows], dtype=np.int64),
            "symmetric": np.array([o.symmetric for _, o in rows], dtype=bool),
            "prune_ratio": np.array([o.prune_ratio for _, o in rows], dtype=np.float64),
            "a_bits": np.array([o.a_bits or 0 for _, o in rows], dtype=np.int64),
            "bits": np.array([o.bits for _, o in rows], dtype=np.int64),
            "bytes": np.array([o.bytes for _, o in rows], dtype=np.int64),
            "bitops": np.array([-1 if o.bitops is None else o.bitops for _, o in rows], dtype=np.int64),
            "latency_ms": np.array([np.nan if o.latency_ms is None else o.latency_ms for _, o in rows], dtype=np.float64),
            "distortion": np.array([o.distortion for _, o in rows], dtype=np.float64),
        }
        return cls(a, problem.constraints, [list(t) for t in problem.ties], list(problem.pairs), problem.model, problem.estimator)

    def option(self, row: int) -> Option:
        a = self.arrays
        gs, ab, bo, lat = int(a["group_size"][row]), int(a["a_bits"][row]), int(a["bitops"][row]), float(a["latency_ms"][row])
        return Option(
            id=str(a["option_names"][a["row_option"][row]]), w_bits=int(a["w_bits"][row]), group_size=gs or None,
            format=formats()[int(a["row_format"][row])], symmetric=bool(a["symmetric"][row]), prune_ratio=float(a["prune_ratio"][row]),
            prune_structure=structures()[int(a["row_structure"][row])], a_bits=ab or None, bits=int(a["bits"][row]),
            bytes=int(a["bytes"][row]), bitops=None if bo < 0 else bo, latency_ms=None if math.isnan(lat) else lat,
            distortion=float(a["distortion"][row]),
        )

    def layer_fields(self, i: int) -> dict[str, Any]:
        a = self.arrays
        shape = [int(s) for s in a["layer_shape"][i] if s > 0] or None
        ch = a["layer_channels"][i]
        return {
            "name": str(a["layer_name"][i]), "params": int(a["layer_params"][i]), "shape": shape,
            "module": str(a["layer_module"][i]) or None, "channels": (int(ch[0]), int(ch[1])) if ch[0] >= 0 else None,
        }

    def to_problem(self) -> Problem:
        off = self.offsets()
        layers = []
        for i in range(self.n_layers):
            f = self.layer_fields(i)
            layers.append(ProblemLayer(**f, macs=int(self.arrays["layer_macs"][i]),
                                       options=[self.option(r) for r in range(off[i], off[i + 1])]))
        try:
            return Problem(layers=layers, ties=self.ties, pairs=self.pairs, constraints=self.constraints,
                           model=self.model, estimator=self.estimator)
        except ValidationError as e:
            raise DocumentError(format_validation_error(e, "columnar problem")) from None

    # ------------------------------------------------------------------------------------------
    # files

    def header(self) -> dict:
        return {
            "schema": COLUMNS_SCHEMA, "constraints": self.constraints.model_dump(exclude_none=True), "ties": self.ties,
            "pairs": [p.model_dump() for p in self.pairs], "model": self.model.model_dump() if self.model else None,
            "estimator": self.estimator,
        }

    def save(self, path: str | Path) -> Path:
        """Write atomically as ``.npz`` (uncompressed: the solver reads it back fastest)."""
        from .npz import write_arrays
        from .output import write_output

        header = np.array(json.dumps(self.header()))
        return write_output(path, lambda f: write_arrays(f, {"header": header, **self.arrays}))


def read_npz(path: str | Path, what: str) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` file (no pickles); ``what`` names the document in the error."""
    import zipfile

    from .npz import read_arrays

    try:
        return read_arrays(str(path))
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise DocumentError(f"cannot read {path} as a {what} (.npz): {e}") from None


def read_header(data: dict[str, np.ndarray], schema: str, fail) -> dict:
    """The JSON header of a columnar file; returns it as read (its ``schema`` is checked by the caller)."""
    if "header" not in data:
        raise fail(f"header: array required (a JSON string with schema {schema!r})")
    try:
        header = json.loads(str(data["header"]))
    except json.JSONDecodeError as e:
        raise fail(f"header: not JSON ({e.msg})") from None
    except RecursionError:
        raise fail("header: the JSON is nested too deeply") from None
    return header


def load_columns(path: str | Path) -> ProblemColumns:
    """Read and validate a columnar problem; every error names the array, row and layer."""
    return validate_columns(read_npz(path, "columnar problem"), str(path))


def validate_columns(data: dict[str, np.ndarray], source: str = "columnar problem") -> ProblemColumns:
    def fail(msg: str) -> DocumentError:
        return DocumentError(f"invalid {source}: {msg}")

    header = read_header(data, COLUMNS_SCHEMA, fail)
    if not isinstance(header, dict) or header.get("schema") != COLUMNS_SCHEMA:
        got = header.get("schema") if isinstance(header, dict) else None
        hint = " (that is the JSON problem's schema: save it with `mpq solve` or ProblemColumns.from_problem)" if got == PROBLEM_SCHEMA else ""
        raise fail(f"header.schema: unsupported version {got!r}{hint}; expected {COLUMNS_SCHEMA!r}")
    for name, (kinds, _) in ARRAYS.items():
        if name not in data:
            raise fail(f"{name}: array required")
        if data[name].dtype.kind not in kinds:
            raise fail(f"{name}: expected dtype kind {kinds!r}, got {data[name].dtype}")
    unknown = sorted(set(data) - set(ARRAYS) - {"header"})
    if unknown:
        raise fail(f"unknown arrays {unknown}; expected {sorted(ARRAYS)} and header")
    L, R = data["layer_name"].shape[0] if data["layer_name"].ndim == 1 else -1, data["row_layer"].shape[0] if data["row_layer"].ndim == 1 else -1
    if L <= 0:
        raise fail("layer_name: expected a non-empty 1-d array of layer names")
    for name, (_, kind) in ARRAYS.items():
        a = data[name]
        want = {"layer": L, "row": R}.get(kind)
        if want is not None and (a.shape[:1] != (want,)):
            raise fail(f"{name}: expected {want} entries (one per {kind}), got shape {a.shape}")
    if data["layer_shape"].ndim != 2 or data["layer_channels"].shape != (L, 2):
        raise fail("layer_shape must be (layers, dims) and layer_channels (layers, 2)")
    a = {k: v for k, v in data.items() if k != "header"}
    names = a["layer_name"]

    def where_row(r: int) -> str:
        i = int(a["row_layer"][r]) if 0 <= int(a["row_layer"][r]) < L else -1
        oid = str(a["option_names"][a["row_option"][r]]) if 0 <= a["row_option"][r] < a["option_names"].size else "?"
        return f"row {r} (layer {str(names[i])!r}, option {oid!r})" if i >= 0 else f"row {r}"

    def check(bad: np.ndarray, what: str, where=where_row) -> None:
        idx = np.flatnonzero(bad)
        if idx.size:
            raise fail(f"{what} at {where(int(idx[0]))}" + (f" and {idx.size - 1} more" if idx.size > 1 else ""))

    rl = a["row_layer"]
    # rows grouped by layer in layer order, every layer with a row: row_layer starts at 0, ends at L - 1,
    # never decreases, and takes every value between (the slower checks below run only to name what is wrong)
    grouped = R > 0 and int(rl[0]) == 0 and int(rl[-1]) == L - 1 and bool((rl[:-1] <= rl[1:]).all())
    if not grouped or not np.bincount(rl.astype(np.int64, copy=False), minlength=L).all():
        step = np.diff(rl.astype(np.int64, copy=False)) if R > 1 else np.zeros(0, dtype=np.int64)
        check(step < 0, "row_layer: rows must be grouped by layer in layer order; it decreases", lambda r: f"row {r + 1}")
        check((rl < 0) | (rl >= L), f"row_layer: must index a layer in [0, {L})")
        counts = np.bincount(rl.astype(np.int64, copy=False), minlength=L)
        check(counts == 0, "layer has no option", lambda i: f"layer {str(names[i])!r}")
        del step
    ro = a["row_option"]
    if R and (int(ro.min()) < 0 or int(ro.max()) >= a["option_names"].size):
        check((ro < 0) | (ro >= a["option_names"].size), "row_option: must index option_names")
    check(a["option_names"] == "", "option_names: empty option id", lambda i: f"entry {i}")
    dup = first_duplicate(a["row_layer"] * (a["option_names"].size + 1) + a["row_option"])
    if dup is not None:
        raise fail(f"option id appears twice in one layer at {where_row(dup)}")
    check_option_columns(a, check)
    for name in ("layer_params", "layer_macs"):
        check((a[name] < 0) | (a[name] > MAX_SIZE), f"{name}: must be an integer in [0, 2**53]", lambda i: f"layer {str(names[i])!r}")
    check_size_sums(a, fail)
    check_names(names, fail)
    try:
        constraints = Constraints(**(header.get("constraints") or {}))
        pairs = [ProblemPair(**p) for p in header.get("pairs") or []]
        model = ModelRef(**header["model"]) if header.get("model") else None
    except (ValidationError, TypeError) as e:
        raise fail(f"header: {e}") from None
    if not constraints.active():
        raise fail("header.constraints: the problem sets no constraint; set at least one of max_bytes, max_avg_bits, max_bitops, max_latency_ms")
    for n in ("max_bitops", "max_latency_ms"):
        if n in constraints.active():
            col = a["bitops"] < 0 if n == "max_bitops" else np.isnan(a["latency_ms"])
            check(col, f"{n} is constrained but {'bitops' if n == 'max_bitops' else 'latency_ms'} is null")
    ties = header.get("ties") or []
    if not isinstance(ties, list) or not all(isinstance(t, list) and all(isinstance(n, str) for n in t) for t in ties):
        raise fail(f"header.ties: expected a list of lists of layer names, got {json.dumps(ties)[:80]}")
    if not isinstance(header.get("pairs") or [], list) or not all(isinstance(p, dict) for p in header.get("pairs") or []):
        raise fail(f"header.pairs: expected a list of pair objects, got {json.dumps(header.get('pairs'))[:80]}")
    if header.get("estimator") is not None and not isinstance(header["estimator"], str):
        raise fail(f"header.estimator: expected a name or null, got {header['estimator']!r}")
    if not isinstance(header.get("constraints") or {}, dict) or (header.get("model") is not None and not isinstance(header["model"], dict)):
        raise fail("header.constraints and header.model: expected JSON objects")
    cols = ProblemColumns(a, constraints, ties, pairs, model, header.get("estimator"))
    if ties or pairs:
        cols.to_problem()  # the JSON model checks ties and pairs (they reference names and options)
    return cols


#: what each column shared by problems and plans holds (``mpq schema`` prints these)
COLUMN_MEANING = {
    "layer_name": "layer name", "layer_params": "weights in the layer", "layer_shape": "weight shape, zero-padded (all zero: none)",
    "layer_module": "module whose weights the layer is ('' : the layer name)", "layer_channels": "[first, end) output channels of a slice; -1: whole layer",
    "option_names": "option ids (a table, indexed by row_option)", "row_option": "chosen option id, index into option_names",
    "row_format": "number format, index into the schema's formats", "row_structure": "prune structure, index into the schema's structures",
    "w_bits": "weight bits", "group_size": "quantization group size (0: per output channel)", "symmetric": "symmetric grid",
    "prune_ratio": "pruned fraction", "a_bits": "activation bits (0: none)", "bits": "weight bits in storage, scales included",
    "bytes": "ceil(bits / 8)", "bitops": "BitOps per sample (-1: none)", "latency_ms": "latency (NaN: none)",
    "distortion": "predicted distortion",
}


def describe() -> dict:
    """The layout of ``mpq.problem-columns/v1``: its header (a JSON string) and its arrays."""
    meaning = {**COLUMN_MEANING, "layer_macs": "multiply-accumulates per sample", "row_layer": "layer of the row (rows grouped by layer, in layer order)",
               "row_option": "option id of the row, index into option_names"}
    kinds = {"U": "str", "iu": "int", "f": "float", "b": "bool"}
    return {
        "schema": COLUMNS_SCHEMA, "container": "numpy .npz (uncompressed, no pickle); the JSON form is mpq.problem/v1",
        "header": {"type": "JSON string", "properties": {"schema": COLUMNS_SCHEMA, "constraints": Constraints.model_json_schema(),
                                                          "ties": "lists of layer names", "pairs": "as in mpq.problem/v1",
                                                          "model": "as in mpq.problem/v1", "estimator": "name or null"}},
        "arrays": {k: {"dtype": kinds[kk], "entries": {"layer": "one per layer", "row": "one per (layer, option) row", "table": "option table"}[per],
                       "meaning": meaning[k]} for k, (kk, per) in ARRAYS.items()},
        "formats": formats(), "structures": structures(),
    }


def check_option_columns(a: dict[str, np.ndarray], check) -> None:
    """The checks every option passes, as rows of a problem or as the chosen option of each plan layer.

    ``check(bad_mask, message)`` raises naming the first bad entry.
    """
    fmts, structs = formats(), structures()

    def outside(x: np.ndarray, lo: int, hi: int) -> np.ndarray:
        """``(x < lo) | (x > hi)``, or nothing to flag when the range of ``x`` says so (one pass)."""
        if x.size == 0 or (lo <= int(x.min()) and int(x.max()) <= hi):
            return np.zeros(0, dtype=bool)
        return (x < lo) | (x > hi)

    check(outside(a["row_format"], 0, len(fmts) - 1), f"row_format: must index {fmts}")
    check(outside(a["row_structure"], 0, len(structs) - 1), f"row_structure: must index {structs}")
    check(outside(a["w_bits"], 1, 32), "w_bits: must be in [1, 32]")
    fmt_bits = np.array([NUMBER_FORMATS[f].bits or 0 for f in fmts])
    if a["row_format"].size and fmt_bits[int(a["row_format"].min()): int(a["row_format"].max()) + 1].any():
        fmt_bits = fmt_bits[a["row_format"]]
        check((fmt_bits > 0) & (fmt_bits != a["w_bits"]), "w_bits: does not match the format's storage bits")
    ratio = np.array([np.nan if r is None else r for r in PRUNE_STRUCTURES.values()])
    if a["row_structure"].size and not np.isnan(ratio[int(a["row_structure"].min()): int(a["row_structure"].max()) + 1]).all():
        ratio = ratio[a["row_structure"]]
        check(~np.isnan(ratio) & (ratio != a["prune_ratio"]), "prune_ratio: does not match the prune structure's ratio (2:4 means 0.5)")
    check(outside(a["group_size"], 0, np.iinfo(np.int64).max), "group_size: must be positive (0 means per output channel)")
    check(outside(a["a_bits"], 0, np.iinfo(np.int64).max), "a_bits: must be positive (0 means none)")
    for name in ("prune_ratio", "distortion"):
        if not np.isfinite(a[name].sum()):  # one pass; a NaN or infinity makes the sum non-finite
            check(~np.isfinite(a[name]), f"{name}: must be a finite number")
    pr = a["prune_ratio"]
    if pr.size and (pr.min() < 0 or pr.max() >= 1):
        check((pr < 0) | (pr >= 1), "prune_ratio: must be in [0, 1)")
    lat = a["latency_ms"]
    if not np.isnan(lat).all():
        check((lat < 0) | np.isinf(lat), "latency_ms: must be a finite non-negative number (NaN for none)")
    for name in ("bits", "bytes"):  # before any arithmetic on them, so nothing below can wrap
        check(outside(a[name], 0, MAX_SIZE), f"{name}: must be an integer in [0, 2**53]")
    slack = a["bytes"].astype(np.int64, copy=False) * 8  # bytes == ceil(bits / 8) exactly when 0 <= 8 bytes - bits < 8
    slack -= a["bits"].astype(np.int64, copy=False)
    check(outside(slack, 0, 7), "bytes: must be ceil(bits/8)")
    check(outside(a["bitops"], -1, MAX_SIZE), "bitops: must be an integer in [0, 2**53] (-1 for none)")


def check_size_sums(a: dict[str, np.ndarray], fail) -> None:
    """Refuse sizes whose sum over the layers (each at its largest option) could pass ``MAX_SIZE`` (int64 and
    float64 stay exact below it), naming the array, as the JSON problem does."""
    rl = a["row_layer"]
    starts = np.flatnonzero(np.concatenate([[True], rl[1:] != rl[:-1]]))
    columns = {"layer_params": a["layer_params"], "layer_macs": a["layer_macs"],
               "bits": np.maximum.reduceat(a["bits"], starts), "bitops": np.maximum.reduceat(np.maximum(a["bitops"], 0), starts)}
    for name, per_layer in columns.items():
        if per_layer.size and float(per_layer.sum(dtype=np.float64)) > MAX_SIZE / 2:
            total = sum(int(v) for v in per_layer)  # exact, only near the limit
            if total > MAX_SIZE:
                raise fail(f"{name}: summed over the layers it can reach {total}, over the limit of 2**53 ({MAX_SIZE}) "
                           "that keeps every total exact")

def check_names(names: np.ndarray, fail) -> None:
    """Layer names are non-empty and distinct."""
    empty = np.flatnonzero(names == "")
    if empty.size:
        raise fail(f"layer_name: empty name at layer {int(empty[0])}")
    dup = first_duplicate(names)
    if dup is not None:
        raise fail(f"layer_name: layer name {str(names[dup])!r} appears twice")


def first_duplicate(values: np.ndarray) -> Optional[int]:
    """The index of an entry equal to another one, or None when all are distinct.

    Integers already increasing (rows grouped by layer, options in order) cost one pass; otherwise
    they are sorted. Strings are hashed column by column (a fixed-width unicode array is a matrix of
    code points) and only entries whose hashes collide are compared: ``np.unique`` on a million
    names takes seconds.
    """
    if values.size < 2:
        return None
    if values.dtype.kind == "U":
        codes = values.view(np.uint32).reshape(values.size, -1) if values.dtype.itemsize else np.zeros((values.size, 0), np.uint32)
        h = np.zeros(values.size, dtype=np.uint64)
        for j in range(codes.shape[1]):
            h *= np.uint64(1_000_003)
            h += codes[:, j]
        key = h
    else:
        key = values.astype(np.int64, copy=False)
        if bool((key[1:] > key[:-1]).all()):
            return None
    ordered = np.sort(key)
    if not (ordered[1:] == ordered[:-1]).any():
        return None
    order = np.argsort(key, kind="stable")
    same = key[order[1:]] == key[order[:-1]]
    if values.dtype.kind != "U":
        return int(order[1:][same][0])
    suspects = np.unique(np.concatenate([order[1:][same], order[:-1][same]]))
    _, first, counts = np.unique(values[suspects], return_index=True, return_counts=True)
    if not (counts > 1).any():
        return None  # hash collisions between different names
    return int(suspects[first[counts > 1][0]])
