"""A search study's settings, stored in the Optuna study itself so that any worker can join it.

The study's user attribute ``mpq`` holds a :class:`SearchSpec`: the problem, its fingerprint, the
objective, the workload reference (``module:function``) for measured objectives, the NSGA-II
population and the number of complete trials the study should reach. Creating a study that
already exists continues it only when these settings agree; anything else is refused with an
error naming what differs.
"""
from __future__ import annotations

import hashlib
import json
from typing import ClassVar, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mpq.errors import MpqError
from mpq.schema import Problem, format_validation_error
from mpq.solvers.evolutionary import DIRECTIONS, OBJECTIVES

from .storage import mask_url, open_storage

SPEC_ATTR = "mpq"


class StudyMismatch(MpqError):
    """The named study exists but searches another problem or with other settings, or is no mpq study."""


class SearchSpec(BaseModel):
    """What every worker of a study needs; stored in the study's user attributes under ``mpq``."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    version: Literal[1] = 1
    problem: Problem
    fingerprint: str
    objective: Literal[OBJECTIVES] = "additive"
    model: Optional[str] = Field(default=None, description="workload reference module:function, for measured objectives")
    population: int = Field(ge=2)
    trials: int = Field(ge=1, description="complete trials the study should reach, across all workers")
    seed: Optional[int] = None

    #: Settings that must agree for a run to continue an existing study (``trials`` may grow).
    FIXED: ClassVar[tuple[str, ...]] = ("objective", "model", "population")

    @classmethod
    def for_problem(cls, problem: Problem, **settings) -> "SearchSpec":
        return cls(problem=problem, fingerprint=problem_fingerprint(problem), **settings)


def problem_fingerprint(problem: Problem) -> str:
    """sha256 of the problem's canonical JSON (sorted keys, no whitespace)."""
    data = problem.model_dump(mode="json", by_alias=True)
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def read_spec(study, where: str) -> SearchSpec:
    raw = study.user_attrs.get(SPEC_ATTR)
    if raw is None:
        raise StudyMismatch(
            f"study {study.study_name!r} in {where} holds no mpq search settings: it was not created by mpq "
            "(or its creator is still writing them); choose another --study name"
        )
    try:
        return SearchSpec.model_validate(raw)
    except ValidationError as e:
        raise StudyMismatch(format_validation_error(e, f"mpq settings of study {study.study_name!r} in {where}")) from None


def _load(storage, name: str, sampler=None):
    import optuna

    try:
        return optuna.load_study(study_name=name, storage=storage, sampler=sampler)
    except KeyError:
        return None


def open_study(
    url: str,
    name: str,
    spec: SearchSpec,
    *,
    trials: Optional[int] = None,
    sampler=None,
    storage=None,
    heartbeat_s: Optional[int] = None,
):
    """Create study ``name`` with ``spec``, or continue it when it holds the same problem and settings.

    Returns ``(study, spec, created)``. ``trials``, when given, becomes the study's target of complete
    trials (a continued study may be given a larger one). ``spec`` is what a new study gets.
    """
    import optuna

    kwargs = {} if heartbeat_s is None else {"heartbeat_s": heartbeat_s}
    storage = storage if storage is not None else open_storage(url, **kwargs)
    where = mask_url(url)
    study = _load(storage, name, sampler)
    if study is None:
        try:
            study = optuna.create_study(storage=storage, study_name=name, directions=list(DIRECTIONS), sampler=sampler)
        except optuna.exceptions.DuplicatedStudyError:  # another process created it first
            study = _load(storage, name, sampler)
        else:
            study.set_user_attr(SPEC_ATTR, spec.model_dump(mode="json"))
            return study, spec, True
    existing = read_spec(study, where)
    if existing.fingerprint != spec.fingerprint:
        raise StudyMismatch(
            f"study {name!r} in {where} searches problem {existing.fingerprint}, but this problem is "
            f"{spec.fingerprint}; use another --study name for another problem"
        )
    differ = [f"{k} {getattr(existing, k)!r} (this run: {getattr(spec, k)!r})" for k in SearchSpec.FIXED if getattr(existing, k) != getattr(spec, k)]
    if differ:
        raise StudyMismatch(
            f"study {name!r} in {where} already exists with other settings: {', '.join(differ)}; "
            "continue it with the same settings or choose another --study name"
        )
    if trials is not None and trials != existing.trials:
        existing = existing.model_copy(update={"trials": int(trials)})
        study.set_user_attr(SPEC_ATTR, existing.model_dump(mode="json"))
    return study, existing, False


def join_study(url: str, name: str, *, problem: Optional[Problem] = None, sampler=None, storage=None, heartbeat_s: Optional[int] = None):
    """Open an existing study and its settings; with ``problem``, refuse a study of another problem."""
    kwargs = {} if heartbeat_s is None else {"heartbeat_s": heartbeat_s}
    storage = storage if storage is not None else open_storage(url, **kwargs)
    where = mask_url(url)
    study = _load(storage, name, sampler)
    if study is None:
        raise StudyMismatch(
            f"no study named {name!r} in {where}; create it with "
            f"`mpq solve problem.json --solver evolutionary --storage URL --study {name}`"
        )
    spec = read_spec(study, where)
    if problem is not None and problem_fingerprint(problem) != spec.fingerprint:
        raise StudyMismatch(
            f"study {name!r} in {where} searches problem {spec.fingerprint}, but the given problem is {problem_fingerprint(problem)}"
        )
    return study, spec
