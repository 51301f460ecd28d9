"""The estimator interface and its registry.

An estimator takes a workload (model, calibration batches, loss) and the layer graph, and returns
an ``mpq.sensitivity/v1`` table. It never sees a budget. To add one, write a module in this package
(or publish the class in the ``mpq.estimators`` entry point group of your own distribution)::

    @register_estimator
    class MyEstimator(Estimator):
        name = "my-score"

        class Settings(Estimator.Settings):   # declared settings: type, default, range
            probes: Optional[Count] = None

        def estimate(self, workload, graph, options=None):  # self.probes is the checked setting
            layers = {l.name: LayerSensitivity(score=..., params=l.params) for l in graph}
            return self.table(workload, layers)
"""
from __future__ import annotations

import time
from abc import ABC, abstractmethod
from typing import Annotated, Any, Callable, ClassVar, Mapping, Optional

import torch
from pydantic import AfterValidator, Field

from mpq import registry
from mpq.errors import EstimatorSettingsError, UnknownName, WorkloadError
from mpq.graph import LayerGraph
from mpq.quant import QuantSpec
from mpq.schema import LayerSensitivity, ModelRef, SensitivityPair, SensitivityTable
from mpq.settings import Count, NonNegInt, Settings, check_settings, describe
from mpq.workload import Workload

ESTIMATORS: dict[str, type["Estimator"]] = {}


def _device_name(value: str) -> str:
    kind, _, index = value.partition(":")
    if kind not in ("cpu", "cuda") or (index and not (kind == "cuda" and index.isdigit())):
        raise ValueError("expected 'cpu', 'cuda' or 'cuda:N'")
    return value


def _device_or_auto(value: str) -> str:
    if value == "auto":
        return value
    try:
        return _device_name(value)
    except ValueError:
        raise ValueError("expected 'auto', 'cpu', 'cuda' or 'cuda:N'") from None


#: Where an estimator runs (whether CUDA is present is checked when it runs).
Device = Annotated[str, AfterValidator(_device_name)]
#: The same, or ``auto``: wherever the model already is.
DeviceOrAuto = Annotated[str, AfterValidator(_device_or_auto)]


class EstimatorSettings(Settings):
    """Settings every estimator takes."""

    seed: NonNegInt = Field(0, description="seed of every random draw (probe vectors, batch order)")
    device: Device = Field("cpu", description="cpu or cuda[:N]")
    quiet: bool = Field(False, description="no progress bar")

    outside_result = frozenset({"device", "quiet", "threads"})


class CalibrationSettings(EstimatorSettings):
    """Settings of estimators that run the model on calibration batches."""

    probes: Optional[Count] = Field(None, description="calibration batches to use (default: all)")


class SettingsFact:
    """A fact about an estimator that may depend on its settings (does it measure per option? read data?).

    ``rule(settings)`` gives it: on the class, for the default settings (what the listings show),
    on an instance, for that instance's settings. Read-only, so no instance can change the class's fact.
    """

    def __init__(self, rule: Callable[[Any], bool]):
        self.rule = rule

    def __set_name__(self, owner, name):
        self.name = name

    def __get__(self, obj, owner):
        return self.rule(owner.Settings() if obj is None else obj.settings)

    def __set__(self, obj, value):
        raise AttributeError(f"{self.name} follows from the estimator's settings; it cannot be set")


class Estimator(ABC):
    """Base class: subclasses set ``name``, declare ``Settings`` and implement :meth:`estimate`.

    Constructor keywords are the settings, checked once against ``Settings`` (an unknown name or an
    out-of-range value is an :class:`EstimatorSettingsError` naming it); each becomes an attribute.
    Those that change the result enter the cache key, so two runs with the same settings, model and
    data return the same table.
    """

    name: ClassVar[str]
    Settings: ClassVar[type[EstimatorSettings]] = EstimatorSettings
    #: True when the table carries measured distortions per option id (``layers.*.options``);
    #: a :class:`SettingsFact` when a setting decides it.
    per_option: ClassVar[bool] = False
    #: False for data-free estimators that look only at the weights.
    needs_data: ClassVar[bool] = True

    def __init__(self, **settings: Any):
        self.settings = check_settings(f"estimator {self.name!r}", self.Settings, settings, EstimatorSettingsError)
        self.__dict__.update(dict(self.settings))
        self._started = time.perf_counter()

    def config(self) -> dict[str, Any]:
        """Everything that changes the result (the cache key); ``quiet``, ``device`` and threads do not."""
        return self.settings.result_settings()

    @abstractmethod
    def estimate(
        self, workload: Workload, graph: LayerGraph, options: Optional[Mapping[str, QuantSpec]] = None
    ) -> SensitivityTable:
        """Score every layer of ``graph``; per-option estimators measure each entry of ``options``."""

    # helpers for subclasses -----------------------------------------------------------------
    def table(
        self,
        workload: Workload,
        layers: dict[str, LayerSensitivity],
        pairs: Optional[list[SensitivityPair]] = None,
        **meta: Any,
    ) -> SensitivityTable:
        meta = {**self.config(), "seconds": round(time.perf_counter() - self._started, 3), **meta}
        return SensitivityTable(
            estimator=self.name,
            model=ModelRef(name=workload.name, fingerprint=workload.fingerprint()),
            layers=layers,
            pairs=pairs or [],
            meta=meta,
        )

    def generator(self) -> torch.Generator:
        return torch.Generator(device="cpu").manual_seed(self.seed)


#: Register an estimator class under its ``name`` (once).
register_estimator = registry.registrar(ESTIMATORS, "estimator")


def _import_all() -> None:
    """Built-in estimators and ``mpq.estimators`` entry-point plugins, loaded once per process."""
    registry.load("mpq.sensitivity", "mpq.estimators", ESTIMATORS, "estimator")


def available_estimators() -> list[str]:
    _import_all()
    return sorted(ESTIMATORS)


def get_estimator(name: str, **settings: Any) -> Estimator:
    """An estimator instance by registered name; an unknown name lists the known ones."""
    _import_all()
    try:
        cls = ESTIMATORS[name]
    except KeyError:
        raise UnknownName("estimator", name, list(ESTIMATORS)) from None
    return cls(**settings)


def estimator_listing() -> list[dict[str, Any]]:
    """Every registered estimator as ``mpq estimators`` and ``GET /v1/estimators`` show it (default settings)."""
    out = []
    for name in available_estimators():
        cls = ESTIMATORS[name]
        doc = (cls.__doc__ or "").strip().splitlines()
        out.append({"name": name, "description": doc[0] if doc else "", "per_option": cls.per_option,
                    "needs_data": cls.needs_data, "settings": describe(cls.Settings)})
    return out



def check_finite_scores(table: SensitivityTable) -> SensitivityTable:
    """Estimators call this last: a NaN or inf anywhere names its layer instead of slipping into a plan."""
    import math

    for name, layer in table.layers.items():
        values = {"score": layer.score, **{k: v for k, v in (layer.model_extra or {}).items() if isinstance(v, float)}}
        values.update({f"options.{k}": v for k, v in (layer.options or {}).items()})
        for field, v in values.items():
            if not math.isfinite(v):
                raise WorkloadError(f"estimator {table.estimator!r}: layer {name!r} got a non-finite {field} ({v})")
    return table
