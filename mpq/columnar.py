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
from .schema import (FORMAT_BITS, PROBLEM_SCHEMA, Constraints, ModelRef, Option, Problem, ProblemLayer, ProblemPair,
                     format_validation_error)

COLUMNS_SCHEMA = "mpq.problem-columns/v1"
FORMATS = ("int", "float", "fp8_e4m3", "fp8_e5m2", "fp4_e2m1", "nvfp4")
STRUCTURES = ("unstructured", "2:4")

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
            "row_format": np.array([FORMATS.index(o.format) for _, o in rows], dtype=np.int64),
            "row_structure": np.array([STRUCTURES.index(o.prune_structure) for _, o in rows], dtype=np.int64),
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
            format=FORMATS[int(a["row_format"][row])], symmetric=bool(a["symmetric"][row]), prune_ratio=float(a["prune_ratio"][row]),
            prune_structure=STRUCTURES[int(a["row_structure"][row])], a_bits=ab or None, bits=int(a["bits"][row]),
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
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp.npz")
        np.savez(tmp, header=np.array(json.dumps(self.header())), **self.arrays)
        tmp.replace(path)
        return path


def load_columns(path: str | Path) -> ProblemColumns:
    """Read and validate a columnar problem; every error names the array, row and layer."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            data = {k: f[k] for k in f.files}
    except (OSError, ValueError) as e:
        raise DocumentError(f"cannot read {path} as a columnar problem (.npz): {e}") from None
    return validate_columns(data, str(path))


def validate_columns(data: dict[str, np.ndarray], source: str = "columnar problem") -> ProblemColumns:
    def fail(msg: str) -> DocumentError:
        return DocumentError(f"invalid {source}: {msg}")

    if "header" not in data:
        raise fail(f"header: array required (a JSON string with schema {COLUMNS_SCHEMA!r})")
    try:
        header = json.loads(str(data["header"]))
    except json.JSONDecodeError as e:
        raise fail(f"header: not JSON ({e.msg})") from None
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

    check(np.diff(a["row_layer"]) < 0, "row_layer: rows must be grouped by layer in layer order; it decreases", lambda r: f"row {r + 1}")
    check((a["row_layer"] < 0) | (a["row_layer"] >= L), f"row_layer: must index a layer in [0, {L})")
    counts = np.bincount(a["row_layer"], minlength=L)
    check(counts == 0, "layer has no option", lambda i: f"layer {str(names[i])!r}")
    check((a["row_option"] < 0) | (a["row_option"] >= a["option_names"].size), "row_option: must index option_names")
    check(np.char.str_len(a["option_names"]) == 0, "option_names: empty option id", lambda i: f"entry {i}")
    key = a["row_layer"] * (a["option_names"].size + 1) + a["row_option"]
    if np.unique(key).size != R:
        order = np.argsort(key, kind="stable")
        dup = np.zeros(R, dtype=bool)
        dup[order[1:][np.diff(key[order]) == 0]] = True
        check(dup, "option id appears twice in one layer")
    check((a["row_format"] < 0) | (a["row_format"] >= len(FORMATS)), f"row_format: must index {list(FORMATS)}")
    check((a["row_structure"] < 0) | (a["row_structure"] >= len(STRUCTURES)), f"row_structure: must index {list(STRUCTURES)}")
    check((a["w_bits"] < 1) | (a["w_bits"] > 32), "w_bits: must be in [1, 32]")
    fmt_bits = np.array([FORMAT_BITS.get(f, 0) for f in FORMATS])[np.clip(a["row_format"], 0, len(FORMATS) - 1)]
    check((fmt_bits > 0) & (fmt_bits != a["w_bits"]), "w_bits: does not match the format's storage bits")
    check(a["group_size"] < 0, "group_size: must be positive (0 means per output channel)")
    check(a["a_bits"] < 0, "a_bits: must be positive (0 means none)")
    for name in ("prune_ratio", "distortion"):
        check(~np.isfinite(a[name]), f"{name}: must be a finite number")
    check((a["prune_ratio"] < 0) | (a["prune_ratio"] >= 1), "prune_ratio: must be in [0, 1)")
    check((a["latency_ms"] < 0) | np.isinf(a["latency_ms"]), "latency_ms: must be a finite non-negative number (NaN for none)")
    for name in ("bits", "bytes"):
        check(a[name] < 0, f"{name}: must be non-negative")
    check(-(-a["bits"] // 8) != a["bytes"], "bytes: must be ceil(bits/8)")
    check(a["bitops"] < -1, "bitops: must be non-negative (-1 for none)")
    check(a["layer_params"] < 0, "layer_params: must be non-negative", lambda i: f"layer {str(names[i])!r}")
    check(np.char.str_len(names) == 0, "layer_name: empty name", lambda i: f"layer {i}")
    if np.unique(names).size != L:
        u, c = np.unique(names, return_counts=True)
        raise fail(f"layer_name: layer name {str(u[c > 1][0])!r} appears twice")
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
    ties = [list(map(str, t)) for t in header.get("ties") or []]
    cols = ProblemColumns(a, constraints, ties, pairs, model, header.get("estimator"))
    if ties or pairs:
        cols.to_problem()  # the JSON model checks ties and pairs (they reference names and options)
    return cols


def load_problem(path: str | Path):
    """A problem from ``.json`` (``mpq.problem/v1``) or its columnar ``.npz`` form."""
    from .schema import load_document

    if str(path).endswith(".npz"):
        return load_columns(path)
    return load_document(path, Problem)


def save_problem(problem, path: str | Path) -> Path:
    """Write a problem (JSON model or columns) as ``.npz`` columns or ``.json``, by the file's suffix."""
    from .schema import save_document

    path = Path(path)
    if path.suffix == ".npz":
        cols = problem if isinstance(problem, ProblemColumns) else ProblemColumns.from_problem(problem)
        return cols.save(path)
    save_document(problem.to_problem() if isinstance(problem, ProblemColumns) else problem, path)
    return path
