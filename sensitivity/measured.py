"""Measured sensitivity: quantize one layer at a time to each candidate option and measure the damage.

With ``metric="loss"`` (default) the distortion of layer l at option o is the increase of the mean
calibration loss when only l is quantized to o (Hubara et al., "Improving post training neural
quantization", the integer-programming allocation). With ``metric="kl"`` it is the KL divergence
``KL(p_fp || p_q)`` of the model's output distributions (ZeroQ's sensitivity), which needs no labels.
Both are exact for one layer in isolation and cost one calibration pass per layer and option.

``probes`` caps the number of calibration batches used. ``score`` is the least-squares slope of
``distortion ≈ score × ||Q(W) - W||²`` over the options (see ``fit_score``); the cost model uses the
per-option distortions in ``layers.*.options`` directly. Activation bits (``a_bits``) do not change
the measurement: only weights are quantized here, as in ``mpq apply``.
"""
from __future__ import annotations

from typing import Literal, Mapping, Optional, Sequence

import torch
import torch.nn.functional as F

from pydantic import Field

from mpq.errors import WorkloadError
from mpq.graph import LayerGraph
from mpq.quant import QuantSpec, quantization_error, weight_matrix
from mpq.schema import LayerSensitivity, SensitivityTable
from mpq.workload import Batch, Workload, call_model

from ._runtime import (
    all_quantized, calibration, candidate_options, check_device, fit_score, mean_loss,
    output_tensor, prepared, progress,
)
from .base import CalibrationSettings, Estimator, register_estimator

METRICS = ("loss", "kl")


class Damage:
    """How much a perturbed model departs from the full-precision one on fixed calibration batches."""

    def __init__(self, workload: Workload, model: torch.nn.Module, batches: Sequence[Batch], metric: str):
        self.workload, self.model, self.batches, self.metric = workload, model, batches, metric
        with torch.no_grad():
            if metric == "loss":
                self.reference = mean_loss(workload, model, batches)
            else:
                self.reference_logp = [self._log_probs(b) for b in batches]

    def _log_probs(self, batch: Batch) -> torch.Tensor:
        out = output_tensor(call_model(self.model, batch[0])).float()
        if out.dim() == 0 or out.shape[-1] < 2:
            raise WorkloadError(
                f"metric 'kl' needs the model to output logits over at least two classes in its last dimension, "
                f"got an output of shape {tuple(out.shape)}; use metric 'loss'"
            )
        logp = F.log_softmax(out, dim=-1)
        if not torch.isfinite(logp).all():
            raise WorkloadError(f"workload {self.workload.name!r}: the model's outputs contain NaN or inf")
        return logp.reshape(-1, out.shape[-1])

    def __call__(self) -> float:
        """Loss increase (or output KL) of the model as it is now, relative to the reference."""
        with torch.no_grad():
            if self.metric == "loss":
                return mean_loss(self.workload, self.model, self.batches) - self.reference
            total = 0.0
            for ref, batch in zip(self.reference_logp, self.batches):
                logq = self._log_probs(batch)
                total += float(F.kl_div(logq, ref, log_target=True, reduction="batchmean"))
            return total / len(self.batches)


@register_estimator
class MeasuredEstimator(Estimator):
    """Exact per-option damage: quantize each layer alone and measure the loss increase (or output KL)."""

    name = "measured"
    per_option = True

    class Settings(CalibrationSettings):
        metric: Literal[METRICS] = Field("loss", description="loss increase, or KL divergence of the outputs")

    def estimate(self, workload: Workload, graph: LayerGraph, options: Optional[Mapping[str, QuantSpec]] = None) -> SensitivityTable:
        specs = candidate_options(options, self.name)
        device = check_device(self.device)
        with prepared(workload.model, device) as model:
            batches = calibration(workload, self.probes, device)
            damage = Damage(workload, model, batches, self.metric)
            layers = self.measure_layers(graph, specs, damage)
        return self.table(workload, layers, batches=len(batches), metric=self.metric)

    def measure_layers(self, graph: LayerGraph, specs: Mapping[str, QuantSpec], damage: Damage) -> dict[str, LayerSensitivity]:
        layers = {}
        work = progress([(l, o) for l in graph.names for o in specs], desc=f"{self.name} ({damage.metric})", quiet=self.quiet)
        measured: dict[str, dict[str, float]] = {name: {} for name in graph.names}
        for name, oid in work:
            with all_quantized([(graph.module(name), specs[oid])]):
                measured[name][oid] = damage()
        for info in graph:
            w = weight_matrix(graph.module(info.name))
            errors = {oid: quantization_error(w, spec) for oid, spec in specs.items()}
            d = measured[info.name]
            layers[info.name] = LayerSensitivity(score=fit_score(d, errors), params=info.params, options=d)
        return layers
