"""Columnar documents over HTTP: a columnar problem in, a columnar plan out (``.npz``, no pickle).

``POST /v1/plans`` takes a columnar problem (``mpq.problem-columns/v1``) as its body when it is sent
as :data:`PROBLEM_COLUMNS`, with the solver and its settings in the query (``?solver=auto&options=
{"time_limit_s": 5}``), and any plan route answers with the columnar plan (``mpq.plan-columns/v1``,
the file ``mpq solve -o plan.npz`` writes and ``mpq export``/``apply``/``schema`` read) when the
request asks for it with ``Accept:`` :data:`PLAN_COLUMNS`. Neither type is one a browser may send
without a CORS preflight, so accepting it keeps the service's cross-site protection
(:mod:`mpq.service.guard`).
"""
from __future__ import annotations

import io
import json
import zipfile
from typing import Any

import numpy as np

from mpq.columnar import ProblemColumns, validate_columns
from mpq.errors import DocumentError

from .limits import Limits, OverLimit

#: the body type of a columnar problem, and the answer type of a columnar plan
PROBLEM_COLUMNS = "application/vnd.mpq.problem-columns+npz"
PLAN_COLUMNS = "application/vnd.mpq.plan-columns+npz"


def media_type(value: str) -> str:
    """``type/subtype`` of a Content-Type value, lower case, without parameters."""
    return value.split(";", 1)[0].strip().lower()


def wants_columns(accept: str) -> bool:
    """True when an ``Accept`` header names the columnar plan (the service never guesses it from ``*/*``)."""
    return any(media_type(part) == PLAN_COLUMNS for part in accept.split(","))


def read_problem_columns(body: bytes, limits: Limits) -> ProblemColumns:
    """The columnar problem in a request body, checked against ``limits`` before any array is read whole.

    A compressed ``.npz`` is refused past ``limits.max_body_bytes`` of arrays (it could unpack to far more
    than it weighs); the counts of layers and options are checked like a JSON problem's.
    """
    try:
        archive = zipfile.ZipFile(io.BytesIO(body))
        unpacked = sum(i.file_size for i in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise DocumentError(f"body: not a columnar problem (.npz): {e}") from None
    if unpacked > limits.max_body_bytes:
        raise OverLimit(f"body: the columnar problem's arrays take {unpacked} bytes unpacked, over this service's "
                        f"limit of {limits.max_body_bytes} bytes")
    try:
        with np.load(io.BytesIO(body), allow_pickle=False) as f:
            data = {k: f[k] for k in f.files}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise DocumentError(f"body: not a columnar problem (.npz): {e}") from None
    columns = validate_columns(data, "columnar problem")
    if columns.n_layers > limits.max_layers:
        raise OverLimit(f"problem: {columns.n_layers} layers is over this service's limit of {limits.max_layers}")
    counts = np.bincount(columns.arrays["row_layer"], minlength=columns.n_layers)
    if counts.size and int(counts.max()) > limits.max_options_per_layer:
        i = int(np.argmax(counts))
        raise OverLimit(f"problem: layer {str(columns.arrays['layer_name'][i])!r} has {int(counts[i])} options, over the "
                        f"limit of {limits.max_options_per_layer} per layer")
    if columns.n_rows > limits.max_options:
        raise OverLimit(f"problem: {columns.n_rows} candidate options in all is over this service's limit of {limits.max_options}")
    return columns


def query_request(solver: str, options: str) -> tuple[str, dict[str, Any]]:
    """The solver and settings a columnar request gives in its query (``options`` as a JSON object)."""
    if not solver or len(solver) > 64:
        raise DocumentError(f"solver: expected a solver name of 1-64 characters, got {solver!r}")
    try:
        parsed = json.loads(options or "{}")
    except (json.JSONDecodeError, RecursionError):
        raise DocumentError(f"options: expected a JSON object in the query, got {options[:80]!r}") from None
    if not isinstance(parsed, dict):
        raise DocumentError(f"options: expected a JSON object in the query, got {options[:80]!r}")
    return solver, parsed


def plan_columns_bytes(plan_json: str) -> bytes:
    """A stored plan (its JSON) as the ``.npz`` of :class:`mpq.plan_columns.PlanColumns`."""
    from mpq.plan_columns import PlanColumns
    from mpq.schema import Plan

    out = io.BytesIO()
    PlanColumns.from_plan(Plan.model_validate_json(plan_json)).write(out)
    return out.getvalue()
