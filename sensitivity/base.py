"""The estimator interface and its registry.

An estimator takes a workload (model, calibration batches, loss) and the layer graph, and returns
an ``mpq.sensitivity/v1`` table. It never sees a budget. To add one, write a module in this package::

    @register_estimator
    class MyEstimator(Estimator):
        name = "my-score"

        def estimate(self, workload, graph, options=None):
            layers = {l.name: LayerSensitivity(score=..., params=l.params) for l in graph}
            return self.table(workload, layers)
"""
from __future__ import annotations

import importlib
import pkgutil
import time
from abc import ABC, abstractmethod
from typing import Any, ClassVar, Mapping, Optional

import torch

from mpq.errors import EstimatorSettingsError, UnknownName, WorkloadError
from mpq.graph import LayerGraph
from mpq.quant import QuantSpec
from mpq.schema import LayerSensitivity, ModelRef, SensitivityPair, SensitivityTable
from mpq.workload import Workload
from mpq.settings import check_settings

ESTIMATORS: dict[str, type["Estimator"]] = {}


class Estimator(ABC):
    """Base class: subclasses set ``name`` and implement :meth:`estimate`.

    Constructor keywords are the estimator's settings; they enter the cache key, so two runs with
    the same settings, model and data return the same table.
    """

    name: ClassVar[str]
    #: True when the table carries measured distortions per option id (``layers.*.options``).
    per_option: ClassVar[bool] = False
    #: False for data-free estimators that look only at the weights.
    needs_data: ClassVar[bool] = True

    def __init__(self, *, seed: int = 0, device: str = "cpu", quiet: bool = False, **settings: Any):
        self.seed = int(seed)
        self.device = device
        self.quiet = quiet
        self.settings = settings
        self._started = time.perf_counter()

    def config(self) -> dict[str, Any]:
        """Everything that changes the result (the cache key); ``quiet`` and ``device`` do not."""
        return {"seed": self.seed, **self.settings}

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


def register_estimator(cls: type[Estimator]) -> type[Estimator]:
    ESTIMATORS[cls.name] = cls
    return cls


def _import_all() -> None:
    import mpq.sensitivity as pkg

    for info in pkgutil.iter_modules(pkg.__path__):
        if not info.name.startswith("_") and info.name not in ("base", "cache"):
            importlib.import_module(f"mpq.sensitivity.{info.name}")


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
    check_settings(name, cls, settings, EstimatorSettingsError)
    return cls(**settings)



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
