"""Data-free sensitivity: every weight counts the same, so distortion is the weights' quantization noise.

For when no calibration data is given (as NNCF's weight-only criteria): ``score = 1`` makes the
cost model's distortion ``||Q(W) - W||^2``; ``normalize=True`` divides by ``||W||^2`` so wide and
narrow layers compare by relative noise. ``probes`` (the CLI's ``--probes``) is accepted and
ignored: there is nothing to sample, and it stays out of the cache key.
"""
from __future__ import annotations

from typing import Mapping, Optional


from pydantic import Field

from mpq.graph import LayerGraph
from mpq.quant import QuantSpec, weight_matrix
from mpq.schema import LayerSensitivity, SensitivityTable
from mpq.workload import Workload

from .base import Estimator, EstimatorSettings, register_estimator


@register_estimator
class WeightErrorEstimator(Estimator):
    """Data-free: quantization noise of the weights themselves (optionally relative to their energy)."""

    name = "weight-error"
    needs_data = False

    class Settings(EstimatorSettings):
        normalize: bool = Field(False, description="divide the error by the weight's energy")
        probes: Optional[int] = Field(None, description="ignored: the estimator reads no data")

        outside_result = EstimatorSettings.outside_result | {"probes"}

    def estimate(self, workload: Workload, graph: LayerGraph, options: Optional[Mapping[str, QuantSpec]] = None) -> SensitivityTable:
        layers = {}
        for info in graph:
            w = weight_matrix(graph.module(info.name)).detach().double()
            energy = float((w**2).sum())
            score = 1.0 / energy if self.normalize and energy > 0 else 1.0
            layers[info.name] = LayerSensitivity(score=score, params=info.params, weight_energy=energy)
        return self.table(workload, layers)
