"""One exception type per kind of failure, each carrying what the user needs to fix it.

Every error mpq raises on bad input derives from :class:`MpqError`; the CLI prints its message as
one ``error:`` line and exits with the class's ``exit_code``, the service turns it into a 4xx answer.
The exit codes (the table in README.md): 0 ok, 2 usage or bad input, 3 infeasible budget, 4 time limit
without a plan, 5 model or data load failure.
"""
from __future__ import annotations

from typing import ClassVar

#: the documented exit codes of the ``mpq`` command line
EXIT_OK, EXIT_USAGE, EXIT_INFEASIBLE, EXIT_TIME_LIMIT, EXIT_LOAD = 0, 2, 3, 4, 5


class MpqError(Exception):
    """Base class of every error mpq raises on bad input or an unsatisfiable request."""

    #: the command line's exit status for this kind of failure
    exit_code: ClassVar[int] = EXIT_USAGE


class DocumentError(MpqError, ValueError):
    """A JSON document (sensitivity table, problem, plan) is malformed; the message names the field."""


class WorkloadError(MpqError, ValueError):
    """The model, calibration data or loss cannot be used as given."""

    exit_code = EXIT_LOAD


class OutputError(MpqError, OSError):
    """An output file cannot be written (missing directory, a directory, no permission); the message names it."""


class LoadOptionError(WorkloadError):
    """A model-loading option is out of range (e.g. --seq-len beyond the model's positions): a usage error."""

    exit_code = EXIT_USAGE


class EstimatorSettingsError(MpqError, ValueError):
    """An estimator setting is unknown or out of range; the message names it."""


class UnknownLayer(MpqError, KeyError):
    """A document names a layer the model or problem does not have."""

    def __str__(self) -> str:  # KeyError would wrap the message in quotes
        return str(self.args[0]) if self.args else ""


class UnknownName(MpqError, KeyError):
    """A registry (estimators, solvers, exporters) was asked for a name it does not have."""

    def __init__(self, kind: str, name: str, known: list[str]):
        self.kind, self.name, self.known = kind, name, sorted(known)
        super().__init__(f"unknown {kind} {name!r}; available: {', '.join(self.known)}")

    def __str__(self) -> str:
        return self.args[0]


class PlanInfeasible(MpqError):
    """No plan satisfies the constraints; ``minimum`` maps each constraint to its smallest feasible value."""

    exit_code = EXIT_INFEASIBLE

    def __init__(self, message: str, minimum: dict[str, float] | None = None):
        self.minimum = dict(minimum or {})
        super().__init__(message)


class SolverSettingsError(MpqError, ValueError):
    """A solver setting is unknown or out of range; the message names it."""


class SolverNotApplicable(MpqError):
    """The chosen solver cannot solve this problem exactly (e.g. DP with several constraints)."""


class SolverFailed(MpqError):
    """The underlying solver returned no usable solution (time limit without incumbent, numerical failure)."""


class TimeLimitReached(SolverFailed):
    """The solver's time limit passed before it had any plan within the constraints; the message names the limit."""

    exit_code = EXIT_TIME_LIMIT


class TargetError(MpqError, ValueError):
    """A plan cannot be made for a target (``mpq plan --target``): the message says what the target supports."""


class ExportError(MpqError):
    """A plan cannot be expressed in the target quantizer's format; the message suggests what to change."""
