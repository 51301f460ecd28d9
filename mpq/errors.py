"""One exception type per kind of failure, each carrying what the user needs to fix it.

Every error mpq raises on bad input derives from :class:`MpqError`; the CLI prints its message
and exits with code 2, the service turns it into a 4xx answer.
"""
from __future__ import annotations


class MpqError(Exception):
    """Base class of every error mpq raises on bad input or an unsatisfiable request."""


class DocumentError(MpqError, ValueError):
    """A JSON document (sensitivity table, problem, plan) is malformed; the message names the field."""


class WorkloadError(MpqError, ValueError):
    """The model, calibration data or loss cannot be used as given."""


class ModelLoadError(WorkloadError):
    """A model or its calibration data cannot be loaded (not a model, unsupported, unreadable); the CLI exits 5."""

    exit_code = 5


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

    def __init__(self, message: str, minimum: dict[str, float] | None = None):
        self.minimum = dict(minimum or {})
        super().__init__(message)


class SolverSettingsError(MpqError, ValueError):
    """A solver setting is unknown or out of range; the message names it."""


class SolverNotApplicable(MpqError):
    """The chosen solver cannot solve this problem exactly (e.g. DP with several constraints)."""


class SolverFailed(MpqError):
    """The underlying solver returned no usable solution (time limit without incumbent, numerical failure)."""


class ExportError(MpqError):
    """A plan cannot be expressed in the target quantizer's format; the message suggests what to change."""
