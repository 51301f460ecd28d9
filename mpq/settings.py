"""Declared settings of estimators and solvers, checked in one place (scikit-learn's manner).

Every estimator and solver declares its settings as a ``Settings`` model (a subclass of
:class:`Settings`): one field per setting, with its type, default and range, and validators for
rules across fields. :func:`check_settings` is the one checker: it validates what a caller passes
(the CLI's ``--param``, the service's ``options``, keyword arguments) and raises the owner's error
type with one message format, naming the setting, the value and what was expected::

    solver 'ilp': setting gap_rel=-1: expected a number >= 0

Listings (``mpq estimators``, ``GET /v1/estimators``) read the same declarations through
:func:`describe`. Pure pydantic: no torch.
"""
from __future__ import annotations

from typing import Annotated, Any, Callable, ClassVar, Mapping, Optional, TypeVar

from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError, WithJsonSchema

S = TypeVar("S", bound="Settings")


#: Setting types: integers (never booleans), finite reals, and the common ranges.
Int = Annotated[int, Strict()]
Count = Annotated[int, Strict(), Field(ge=1)]
NonNegInt = Annotated[int, Strict(), Field(ge=0)]
Real = Annotated[float, Strict()]  # strict: an int is accepted, a boolean or text is not
PosReal = Annotated[float, Strict(), Field(gt=0)]
NonNegReal = Annotated[float, Strict(), Field(ge=0)]
#: A time limit in seconds: finite and positive, or none.
TimeLimit = Optional[PosReal]
#: A Python callable passed by code (a progress report, a measured objective); not settable over HTTP.
Hook = Annotated[Optional[Callable[..., Any]], WithJsonSchema({"description": "a Python callable (set from code only)"})]


class Settings(BaseModel):
    """Base of every declared settings model: unknown names and non-finite numbers are refused."""

    # defer_build: a settings model builds its validator when first used (a process imports every
    # solver and estimator to list them, and uses one or two)
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, arbitrary_types_allowed=True,
                              validate_default=False, defer_build=True)

    #: settings that do not change a result (progress bars, devices, thread counts, callbacks):
    #: left out of :meth:`result_settings`, so caches and documents do not depend on them
    outside_result: ClassVar[frozenset[str]] = frozenset()

    def result_settings(self) -> dict[str, Any]:
        """The settings that change the result, as plain values (an estimator's cache key)."""
        return {k: v for k, v in self.model_dump().items() if k not in self.outside_result}


_BOUNDS = (("greater than or equal to ", ">= "), ("greater than ", "> "), ("less than or equal to ", "<= "), ("less than ", "< "))


def _expected(err: dict) -> str:
    msg = err["msg"].removeprefix("Value error, ")
    for words, sign in _BOUNDS:
        if msg.startswith(f"Input should be {words}"):
            return f"expected a value {sign}{msg.removeprefix(f'Input should be {words}')}"
    if msg.startswith("Input should be "):
        msg = msg.removeprefix("Input should be ")
        msg = {"a finite number": "a finite number", "a valid integer": "an integer",
               "a valid number": "a number", "a valid boolean": "true or false", "a valid string": "text"}.get(msg, msg)
        return f"expected {msg}"
    return msg if msg.startswith("expected") else f"expected {msg}" if msg[:1].islower() else msg


def settings_error_message(owner: str, model: type[Settings], values: Mapping[str, Any], err: ValidationError) -> str:
    """One line per bad setting: ``{owner}: setting {name}={value!r}: expected ...``."""
    lines = []
    known = ", ".join(model.model_fields)
    for e in err.errors():
        name = str(e["loc"][0]) if e["loc"] else None
        if e["type"] == "extra_forbidden":
            lines.append(f"{owner}: unknown setting {name!r}; known: {known}")
        elif name is None:  # a rule across settings: its message names them
            lines.append(f"{owner}: {e['msg'].removeprefix('Value error, ')}")
        else:
            shown = values.get(name, e.get("input"))
            lines.append(f"{owner}: setting {name}={shown!r}: {_expected(e)}")
    return "\n".join(lines)


def check_settings(owner: str, model: type[S], values: Mapping[str, Any], error: type[Exception]) -> S:
    """The one settings checker: ``values`` validated against ``model``, or ``error`` naming each bad setting."""
    try:
        return model.model_validate(dict(values))
    except ValidationError as e:
        raise error(settings_error_message(owner, model, values, e)) from None


def describe(model: type[Settings]) -> dict[str, Any]:
    """The declared settings as JSON Schema properties (type, default, range, description), for listings."""
    schema = model.model_json_schema()
    return {name: {k: v for k, v in prop.items() if k != "title"} for name, prop in schema.get("properties", {}).items()}
