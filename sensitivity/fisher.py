"""Empirical Fisher: the mean of squared per-sample gradients, as SqueezeLLM's sensitivity.

``F = mean_n (dL_n/dW)^2`` elementwise over the calibration samples (one sample = one row of a
batch; its loss is ``loss_fn`` on a batch of one). Per layer, ``fisher`` is the sum of F and
``score = fisher / params``, so ``score × ||Q(W) - W||²`` is the diagonal-Fisher distortion with
every weight assumed equally sensitive.

SqueezeLLM weighs each weight's error by its own Fisher entry, ``sum(F ⊙ (Q(W) - W)²)``; that is the
default here (``distortion="weighted"``): the table then carries that value per candidate option
(``layers.*.options``), and the cost model uses it instead of ``score × ||Q(W) - W||²``. With
``distortion="score"`` only the per-layer score is written. ``probes`` caps the number of
calibration batches.

Targets (``targets``): ``empirical`` uses the workload's own targets (SqueezeLLM's empirical
Fisher); ``sampled`` draws them from the model's own output distribution (``workload.sampling``,
one draw and one backward pass per sample), which gives a Monte-Carlo estimate of the true Fisher
(or Gauss-Newton) diagonal; ``auto`` (default) samples where the workload's loss has zero gradient
at full precision (an encoder's self-distillation), where the empirical Fisher would be zero. Per-sample gradients use ``torch.func`` (vmap over the samples of a batch);
a model that vmap cannot run (data-dependent control flow, in-place ops on inputs) falls back to
one backward pass per sample, with the same result.
"""
from __future__ import annotations

from typing import Any, Literal, Mapping, Optional

import torch
from torch import nn

from pydantic import Field

from mpq.errors import WorkloadError
from mpq.graph import LayerGraph
from mpq.quant import QuantSpec, fake_quantize, weight_matrix
from mpq.schema import LayerSensitivity, SensitivityTable
from mpq.workload import Batch, Workload

from ._runtime import (
    TARGET_MODES, batch_loss, calibration, candidate_options, check_device, prepared, progress, sampled_workload, uses_sampled_targets,
)
from .base import CalibrationSettings, Estimator, SettingsFact, register_estimator

MODES = ("weighted", "score")


def batch_size(obj: Any) -> Optional[int]:
    """Leading dimension of the first tensor inside ``obj`` (None when it holds no batched tensor)."""
    if isinstance(obj, torch.Tensor):
        return int(obj.shape[0]) if obj.dim() else None
    values = obj.values() if isinstance(obj, dict) else obj if isinstance(obj, (tuple, list)) else []
    for v in values:
        n = batch_size(v)
        if n is not None:
            return n
    return None


def take(obj: Any, i: int, n: int) -> Any:
    """Sample ``i`` of a batch of ``n`` (kept as a batch of one); tensors without that leading dim pass as they are."""
    if isinstance(obj, torch.Tensor):
        return obj[i:i + 1] if obj.dim() and obj.shape[0] == n else obj
    if isinstance(obj, dict):
        return {k: take(v, i, n) for k, v in obj.items()}
    if isinstance(obj, (tuple, list)):
        return type(obj)(take(v, i, n) for v in obj)
    return obj


def unsqueeze(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.unsqueeze(0)
    if isinstance(obj, dict):
        return {k: unsqueeze(v) for k, v in obj.items()}
    if isinstance(obj, (tuple, list)):
        return type(obj)(unsqueeze(v) for v in obj)
    return obj


class PerSampleGrads:
    """Squared per-sample gradients of the named weights, summed over samples."""

    def __init__(self, workload: Workload, model: nn.Module, weights: dict[str, nn.Parameter]):
        self.workload, self.model, self.weights = workload, model, weights
        self.use_vmap = True

    def _vmapped(self, batch: Batch) -> dict[str, torch.Tensor]:
        from torch.func import functional_call, grad, vmap

        model, loss_fn = self.model, self.workload.loss_fn
        params = {k: w.detach() for k, w in self.weights.items()}

        def sample_loss(p, x, y):
            x = unsqueeze(x)
            if isinstance(x, dict):
                out = functional_call(model, p, (), x)
            elif isinstance(x, (tuple, list)):
                out = functional_call(model, p, tuple(x))
            else:
                out = functional_call(model, p, (x,))
            loss = loss_fn(out, unsqueeze(y))
            if loss.numel() != 1:
                raise WorkloadError(f"workload {self.workload.name!r}: loss_fn must return a scalar, got shape {tuple(loss.shape)}")
            return loss.reshape(())

        inputs, targets = batch
        g = vmap(grad(sample_loss), in_dims=(None, 0, 0), chunk_size=32)(params, inputs, targets)
        return {k: (v.double() ** 2).sum(0) for k, v in g.items()}

    def _looped(self, batch: Batch) -> dict[str, torch.Tensor]:
        inputs, targets = batch
        n = batch_size(inputs) or 1
        names, tensors = list(self.weights), list(self.weights.values())
        out = {k: torch.zeros_like(w, dtype=torch.float64) for k, w in self.weights.items()}
        for i in range(n):
            sample = (take(inputs, i, n), take(targets, i, n)) if n > 1 else batch
            loss = batch_loss(self.workload, self.model, sample)
            for k, g in zip(names, torch.autograd.grad(loss, tensors, allow_unused=True)):
                if g is not None:
                    out[k] += g.double() ** 2
        return out

    def __call__(self, batch: Batch) -> tuple[dict[str, torch.Tensor], int]:
        n = batch_size(batch[0]) or 1
        if self.use_vmap and n > 1:
            try:
                return self._vmapped(batch), n
            except WorkloadError:
                raise
            except Exception:  # vmap cannot run every model (data-dependent control flow, .item()); loop instead
                self.use_vmap = False
        return self._looped(batch), n


@register_estimator
class FisherEstimator(Estimator):
    """Empirical Fisher diagonal (mean squared per-sample gradient), per layer and weight-weighted per option."""

    name = "fisher"

    class Settings(CalibrationSettings):
        distortion: Literal[MODES] = Field("weighted", description="weighted: Fisher-weighted error per option; "
                                           "score: one score per layer")
        targets: Literal[TARGET_MODES] = Field("auto", description="empirical: the workload's targets; sampled: drawn from "
                                               "the model's outputs (Monte-Carlo Fisher); auto: sampled where the loss has "
                                               "no gradient at full precision")

    per_option = SettingsFact(lambda s: s.distortion == "weighted")

    def estimate(self, workload: Workload, graph: LayerGraph, options: Optional[Mapping[str, QuantSpec]] = None) -> SensitivityTable:
        specs = candidate_options(options, self.name) if self.per_option else {}
        device = check_device(self.device)
        with prepared(workload.model, device, grad=True) as model:
            for p in model.parameters():
                p.requires_grad_(False)
            modules = {name: graph.module(name) for name in graph.names}
            weights = {name: m.weight for name, m in modules.items()}
            for w in weights.values():
                w.requires_grad_(True)
            key = {name: _param_name(model, w) or f"<{name}>" for name, w in weights.items()}
            unique = {key[name]: w for name, w in weights.items()}
            batches = calibration(workload, self.probes, device)
            for b in batches:  # the checks (scalar, finite) on whole batches, before the per-sample passes
                with torch.no_grad():
                    batch_loss(workload, model, b)
            sampled = uses_sampled_targets(workload, self.targets)
            source = sampled_workload(workload, model, batches, self.generator()) if sampled else workload
            batches = source.batches if sampled else batches
            grads = PerSampleGrads(source, model, unique)
            # vmap substitutes parameters by name; views of fused expert slices are not the model's parameters
            grads.use_vmap = all(not k.startswith("<") for k in unique)
            total = {k: torch.zeros_like(w, dtype=torch.float64) for k, w in unique.items()}
            samples = 0
            for b in progress(batches, desc=self.name, quiet=self.quiet):
                sq, n = grads(b)
                for k in total:
                    total[k] += sq[k]
                samples += n
            layers = {}
            for info in graph:
                f = total[key[info.name]] / samples
                if not torch.isfinite(f).all():
                    raise WorkloadError(f"estimator {self.name!r}: layer {info.name!r} got non-finite gradients")
                fisher = float(f.sum())
                row = {}
                if specs:
                    module = modules[info.name]
                    w = weight_matrix(module).detach()
                    f2 = _as_matrix(module, f)
                    row["options"] = {
                        oid: float((f2 * (fake_quantize(w, spec).double() - w.double()) ** 2).sum()) for oid, spec in specs.items()
                    }
                layers[info.name] = LayerSensitivity(score=fisher / max(info.params, 1), params=info.params, fisher=fisher, **row)
        if all(l.fisher == 0.0 for l in layers.values()):
            raise WorkloadError(
                f"estimator {self.name!r}: every gradient is zero on the calibration data (a loss with zero gradient at full "
                "precision, e.g. an MSE to the model's own output), so every score would be zero; use --param targets=sampled"
            )
        return self.table(workload, layers, batches=len(batches), samples=samples, distortion=self.distortion,
                          targets="sampled" if sampled else "empirical")


def _param_name(model: nn.Module, weight: nn.Parameter) -> Optional[str]:
    """The parameter's name in ``model``; None for a view that is not one (a fused expert slice)."""
    for name, p in model.named_parameters():
        if p is weight:
            return name
    return None


def _as_matrix(module: nn.Module, t: torch.Tensor) -> torch.Tensor:
    """A per-weight tensor laid out as ``weight_matrix`` lays out the weight."""
    if type(module).__name__ == "Conv1D":
        return t.t()
    return t.reshape(t.shape[0], -1)
