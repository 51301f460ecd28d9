"""Request bodies of the v1 API, and how bad ones are refused.

Bodies are validated with ``mpq.schema``'s models; a body that fails is re-read to give the
document error that names the field (``problem.layers.3.options.0.bytes: ...``). Errors become
``(status, {"detail": message, ...})`` answers here, so every route refuses input the same way.
"""
from __future__ import annotations

import json
import logging
import re
from typing import Any, Callable, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mpq.errors import (
    DocumentError, MpqError, PlanInfeasible, SolverFailed, SolverNotApplicable, UnknownLayer, UnknownName,
)
from mpq.schema import PROBLEM_SCHEMA, Problem, format_validation_error, parse_document

from .limits import OverLimit

log = logging.getLogger("mpq.service")


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PlanRequest(_Body):
    """``POST /v1/plans``: solve ``problem`` with ``solver``; ``options`` are the solver's settings."""

    problem: Problem
    solver: str = Field("auto", min_length=1, max_length=64)
    options: dict[str, Any] = Field(default_factory=dict, description="solver settings, e.g. time_limit_s")


class SearchRequest(PlanRequest):
    """``POST /v1/searches``: the same as a plan request, run in the background."""


class FrontierRequest(_Body):
    """``POST /v1/frontiers``: the size/distortion frontier under the problem's budget."""

    problem: Problem
    max_points: Optional[int] = Field(None, ge=1, description="at most this many plans (default 20)")


def parse_body(body: bytes, model: type[_Body]) -> _Body:
    """Validate a request body; a failure raises DocumentError naming the field."""
    try:
        req = model.model_validate_json(body)
    except ValidationError as err:
        first = err
    except RecursionError:
        raise DocumentError("body: the JSON is nested too deeply") from None
    else:
        problem = getattr(req, "problem", None)
        if problem is not None and "schema_" not in problem.model_fields_set:  # required, as on the command line
            raise DocumentError(f"invalid problem: schema: field required (expected {PROBLEM_SCHEMA!r})")
        return req
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as e:
        where = f" ({e.msg} at line {e.lineno}, column {e.colno})" if isinstance(e, json.JSONDecodeError) else ""
        raise DocumentError(f"body: not a JSON document{where}") from None
    if not isinstance(data, dict):
        raise DocumentError(f"body: expected a JSON object, got {type(data).__name__}")
    if isinstance(data.get("problem"), dict):
        parse_document(data["problem"], Problem, source="problem")  # names the field of a bad problem
    raise DocumentError(format_validation_error(first, "request"))


#: solver settings the service itself passes (to report progress and to cancel)
RESERVED = frozenset({"progress", "should_stop"})
#: solver settings only whoever starts the server may give: storages, files, URLs and callables
SERVER_ONLY = frozenset({"storage", "evaluate_plan"})
#: a study within the server's search storage: a plain name, never a path or URL
STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def _looks_like_location(value: Any) -> bool:
    """True for any string (also nested in lists or objects) that could name a file or URL."""
    if isinstance(value, str):
        return "/" in value or "\\" in value or ":" in value or value.startswith("~")
    if isinstance(value, (list, tuple)):
        return any(_looks_like_location(v) for v in value)
    if isinstance(value, dict):
        return any(_looks_like_location(k) or _looks_like_location(v) for k, v in value.items())
    return False


def request_settings(options: dict[str, Any], runs_in_study: bool, search_storage: Optional[str]) -> dict[str, Any]:
    """A request's solver settings as the server passes them on: never a file, URL or storage chosen by the request.

    For a solver that ``runs_in_study``, a ``study`` names a study within the server's own search
    storage (``mpq serve --search-storage``) and must match ``STUDY_NAME``; without a configured
    storage it is refused.
    """
    reserved = sorted(RESERVED & set(options))
    if reserved:
        raise DocumentError(f"options.{reserved[0]}: this setting is supplied by the service, not by the request")
    server_only = sorted(SERVER_ONLY & set(options))
    if server_only:
        raise DocumentError(
            f"options.{server_only[0]}: a request cannot choose a storage, file, URL or callable on the server; "
            "searches use the storage the server was started with (--search-storage), and a request names only a study"
        )
    for key, value in options.items():
        if key != "study" and _looks_like_location(value):
            raise DocumentError(f"options.{key}: the service takes no paths or URLs from a request, got {value!r}")
    if "study" not in options or not runs_in_study:
        return dict(options)
    study = options["study"]
    if not isinstance(study, str) or not STUDY_NAME.fullmatch(study):
        raise DocumentError(
            f"options.study: expected a name of 1-64 letters, digits, '_', '.' or '-' starting with a letter or digit, got {study!r}"
        )
    if search_storage is None:
        raise DocumentError(
            "options.study: this server has no search storage, so a study cannot be named; leave study out "
            "to search in memory, or start the server with mpq serve --search-storage URL"
        )
    return dict(options)


def make_solver(name: str, options: dict[str, Any], search_storage: Optional[str] = None, **hooks: Optional[Callable]):
    """The registered solver ``name`` with a request's ``options``; ``hooks`` (progress, should_stop) go to solvers that take them.

    ``search_storage`` is the server's storage for searches that name a study (see :func:`request_settings`):
    such a search runs in that study (:class:`mpq.search.shared.StudySearch`).
    """
    from mpq.search.shared import SOLVER as STUDY_SOLVER
    from mpq.solvers.base import SOLVERS, AutoSolver, available_solvers, get_solver

    known = available_solvers()
    if name not in known:
        raise UnknownName("solver", name, known)
    cls = AutoSolver if name == "auto" else SOLVERS[name]
    declared = cls.Settings.model_fields
    settings = request_settings(options, name == STUDY_SOLVER, search_storage)
    study = settings.pop("study", None) if name == STUDY_SOLVER else None
    extra = {k: v for k, v in hooks.items() if v is not None and k in declared}
    try:
        solver = get_solver(name, **settings, **extra)
    except (TypeError, ValueError) as e:
        raise DocumentError(f"options: solver {name!r} refuses these settings: {e}") from None
    if study is None:
        return solver
    from mpq.search.shared import StudySearch

    return StudySearch(solver, search_storage, study)


def error_answer(exc: BaseException) -> tuple[int, dict[str, Any]]:
    """The HTTP status and JSON body for an error raised while serving a request."""
    if isinstance(exc, OverLimit):
        return exc.status, {"detail": str(exc)}
    if isinstance(exc, PlanInfeasible):
        return 422, {"detail": str(exc), "minimum": exc.minimum}
    if isinstance(exc, UnknownName):
        return 422, {"detail": str(exc), "known": exc.known}
    if isinstance(exc, (DocumentError, UnknownLayer, SolverNotApplicable, SolverFailed, MpqError)):
        return 422, {"detail": str(exc)}
    log.error("solver error", exc_info=exc)
    return 422, {"detail": f"the solver failed on this problem: {type(exc).__name__}: {exc}"}
