"""ModelOpt ``auto_quantize``'s score: the output perturbation of a layer, weighted by the loss gradient there.

For layer l with output ``y`` and candidate option o, ``y_q`` is the layer's output on the same input
with only its weight quantized to o, and the distortion is ``sum ||dL/dy ⊙ (y_q - y)||²`` over the
calibration batches (one forward and backward pass per batch records every layer's input and
``dL/dy``; ``y_q`` is recomputed per layer and option from the recorded input). The table carries
it per option in ``layers.*.options``; ``score`` is the least-squares slope over the options as in
``measured``. ``probes`` caps the number of calibration batches.

It needs a loss with a non-zero gradient at full precision. An MSE to the model's own full-precision
output has none, so with ``targets="auto"`` (default) such a workload (``workload.meta
["zero_gradient_at_full_precision"]``) gets targets drawn from the model's own output distribution
(``workload.sampling``; one draw and one backward pass per sample), whose gradients weigh the output
error by the Gauss-Newton (Fisher) matrix in expectation, as ModelOpt is run on encoders with sampled
targets. ``targets="empirical"`` keeps the workload's targets; a zero gradient then is an error.
"""
from __future__ import annotations

from typing import Literal, Mapping, Optional

from pydantic import Field

import torch
from torch import nn
from torch.func import functional_call

from mpq.errors import WorkloadError
from mpq.graph import LayerGraph
from mpq.quant import QuantSpec, fake_quantize, quantization_error, weight_matrix
from mpq.schema import LayerSensitivity, SensitivityTable
from mpq.workload import Workload

from ._runtime import (
    TARGET_MODES, batch_loss, calibration, candidate_options, check_device, fit_score, prepared, progress, sampled_workload,
    uses_sampled_targets,
)
from .base import CalibrationSettings, Estimator, register_estimator


def quantized_weight(module: nn.Module, spec: QuantSpec) -> torch.Tensor:
    """``module.weight`` fake-quantized to ``spec``, in the weight's own layout."""
    wq = fake_quantize(weight_matrix(module).detach(), spec)
    if type(module).__name__ == "Conv1D":
        return wq.t().contiguous()
    return wq.reshape(module.weight.shape)


@register_estimator
class GradOutputEstimator(Estimator):
    """ModelOpt's auto_quantize score: ||dL/dy ⊙ (y_q - y)||² per layer and candidate option."""

    name = "grad-output"
    per_option = True

    class Settings(CalibrationSettings):
        targets: Literal[TARGET_MODES] = Field("auto", description="empirical: the workload's targets; sampled: drawn from "
                                               "the model's outputs; auto: sampled where the loss has no gradient at full precision")

    def estimate(self, workload: Workload, graph: LayerGraph, options: Optional[Mapping[str, QuantSpec]] = None) -> SensitivityTable:
        specs = candidate_options(options, self.name)
        device = check_device(self.device)
        totals = {name: {oid: 0.0 for oid in specs} for name in graph.names}
        grad_energy = 0.0
        with prepared(workload.model, device, grad=True) as model:
            modules = {name: graph.module(name) for name in graph.names}
            for p in model.parameters():
                p.requires_grad_(False)
            for m in modules.values():  # only so that every layer output carries a gradient
                m.weight.requires_grad_(True)
            batches = calibration(workload, self.probes, device)
            sampled = uses_sampled_targets(workload, self.targets)
            source = sampled_workload(workload, model, batches, self.generator()) if sampled else workload
            batches = source.batches if sampled else batches
            qweights = {name: {oid: quantized_weight(m, s) for oid, s in specs.items()} for name, m in modules.items()}
            for batch in progress(batches, desc=self.name, quiet=self.quiet):
                calls: list[tuple[str, tuple, torch.Tensor]] = []

                def hook(name):
                    def record(mod, args, out):
                        if isinstance(out, torch.Tensor) and out.requires_grad:
                            calls.append((name, args, out))
                    return record

                handles = [m.register_forward_hook(hook(name)) for name, m in modules.items()]
                try:
                    with torch.enable_grad():
                        loss = batch_loss(source, model, batch)
                        grads = torch.autograd.grad(loss, [y for _, _, y in calls], allow_unused=True) if calls else []
                finally:
                    for h in handles:
                        h.remove()
                with torch.no_grad():
                    for (name, args, y), g in zip(calls, grads):
                        if g is None:
                            continue
                        g = g.double()
                        grad_energy += float((g**2).sum())
                        for oid, wq in qweights[name].items():
                            yq = functional_call(modules[name], {"weight": wq}, args)
                            totals[name][oid] += float(((g * (yq.double() - y.double())) ** 2).sum())
                del calls, grads
        if grad_energy == 0.0:
            raise WorkloadError(
                f"estimator {self.name!r}: the loss has zero gradient at every layer output at full precision "
                "(e.g. an MSE to the model's own full-precision output), so every score would be zero; "
                "use a task loss, --param targets=sampled, or the 'measured' estimator"
            )
        layers = {}
        for info in graph:
            w = weight_matrix(graph.module(info.name))
            errors = {oid: quantization_error(w, spec) for oid, spec in specs.items()}
            d = totals[info.name]
            layers[info.name] = LayerSensitivity(score=fit_score(d, errors), params=info.params, options=d)
        return self.table(workload, layers, batches=len(batches), targets="sampled" if sampled else "empirical")

