"""Output Gauss-Newton: each layer's quantization damage as a quadratic form at the model's output.

For layer l and option o the distortion is ``½ Δz^T H Δz``, where ``Δz = J_l vec(Q_o(W_l) - W_l)``
is the change of the model's output to first order and ``H`` is the Hessian of the loss with
respect to that output (the Gauss-Newton approximation of the loss increase). It is estimated
without forming ``J_l``: with an output cotangent ``v`` whose covariance is ``H``,
``E[(v^T Δz)^2] = Δz^T H Δz``, and ``v^T Δz = Σ_t g_t · (Δy_t)`` where ``g_t`` is the cotangent
``v`` pulled back to the layer's output at token/sample t (one backward pass gives it for every
layer) and ``Δy_t = (Q_o(W_l) - W_l) x_t`` is the layer's own output change (a local product).

Unlike ModelOpt's score (``grad-output``), the sum over tokens and channels is taken *before*
squaring, so correlated output errors add up as they do in the model; and the cotangents are
sampled, so the loss need not have a gradient at full precision (an encoder's self-distillation
has none). Cotangents:

- self-distillation (``workload.meta["loss"] == "self-distillation-mse"``, targets with ``mask`` and
  ``hidden``): ``v = sqrt(2 / ref) · mask · ε``, ε standard normal (the loss's own Hessian);
- otherwise the model's output is read as logits: ``v = (p - onehot(y)) / sqrt(N)`` with ``y`` drawn
  from ``p = softmax(logits)`` at each of the N positions (the Fisher = Gauss-Newton of a mean
  cross-entropy).

Cost: one forward and ``samples`` backward passes per calibration batch, plus one product of each
layer's recorded input with each option's weight error. ``seed`` fixes the cotangents.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

import torch
from torch import nn

from mpq.errors import WorkloadError
from mpq.graph import LayerGraph
from mpq.quant import QuantSpec, quantization_error, weight_matrix
from mpq.schema import LayerSensitivity, SensitivityTable
from mpq.workload import Workload, call_model

from pydantic import Field

from mpq.settings import Count

from ._runtime import calibration, candidate_options, check_device, fit_score, output_tensor, prepared, progress
from .base import CalibrationSettings, Estimator, register_estimator
from .grad_output import quantized_weight


def main_output(out: Any) -> torch.Tensor:
    """The output the loss reads: an encoder's ``last_hidden_state``, else the logits or the tensor itself."""
    hidden = getattr(out, "last_hidden_state", None)
    return hidden if isinstance(hidden, torch.Tensor) else output_tensor(out)


def _distillation_target(workload: Workload, targets: Any) -> bool:
    return (workload.meta or {}).get("loss") == "self-distillation-mse" and isinstance(targets, dict) and "mask" in targets


def sample_cotangents(workload: Workload, out: torch.Tensor, targets: Any, samples: int, gen: torch.Generator) -> torch.Tensor:
    """``samples`` output cotangents (stacked on a new first dim) whose covariance is the loss Hessian at the output."""
    out = out.detach().float()
    if _distillation_target(workload, targets):
        mask = targets["mask"].to(out.device).unsqueeze(-1).to(out.dtype)
        teacher = targets["hidden"].to(out.device).float()
        ref = float((teacher**2 * mask).sum().clamp(min=1e-12))
        eps = torch.randn((samples, *out.shape), generator=gen).to(out.device)
        return eps * mask * (2.0 / ref) ** 0.5
    if out.dim() == 0 or out.shape[-1] < 2:
        raise WorkloadError(
            f"estimator 'output-gn': the model's output of shape {tuple(out.shape)} is not logits over at least two "
            "classes, and the workload's loss is not a known self-distillation; use 'measured' or 'hessian-trace'"
        )
    probs = torch.softmax(out.reshape(-1, out.shape[-1]), dim=-1).cpu()
    n = probs.shape[0]
    draws = torch.multinomial(probs, samples, replacement=True, generator=gen)  # (n, samples)
    cot = probs.unsqueeze(0).repeat(samples, 1, 1)
    cot[torch.arange(samples).unsqueeze(1), torch.arange(n).unsqueeze(0), draws.t()] -= 1.0
    return (cot / n**0.5).reshape(samples, *out.shape).to(out.device)


@register_estimator
class OutputGNEstimator(Estimator):
    """½ Δz^T H Δz per layer and option, from sampled output cotangents (a Monte-Carlo Gauss-Newton)."""

    name = "output-gn"
    per_option = True

    class Settings(CalibrationSettings):
        samples: Count = Field(4, description="output cotangents sampled per calibration batch (one backward pass each)")

    def estimate(self, workload: Workload, graph: LayerGraph, options: Optional[Mapping[str, QuantSpec]] = None) -> SensitivityTable:
        specs = candidate_options(options, self.name)
        device = check_device(self.device)
        gen = self.generator()
        totals = {name: {oid: 0.0 for oid in specs} for name in graph.names}
        with prepared(workload.model, device, grad=True) as model:
            modules = {name: graph.module(name) for name in graph.names}
            for p in model.parameters():
                p.requires_grad_(False)
            for m in modules.values():  # only so that every layer output carries a gradient
                m.weight.requires_grad_(True)
            batches = calibration(workload, self.probes, device)
            errors = {name: {oid: quantized_weight(m, s) - m.weight.detach() for oid, s in specs.items()} for name, m in modules.items()}
            for inputs, targets in progress(batches, desc=self.name, quiet=self.quiet):
                calls: list[tuple[str, tuple, torch.Tensor]] = []

                def hook(name):
                    def record(mod, args, out):
                        if isinstance(out, torch.Tensor) and out.requires_grad:
                            calls.append((name, args, out))
                    return record

                handles = [m.register_forward_hook(hook(name)) for name, m in modules.items()]
                try:
                    with torch.enable_grad():
                        out = main_output(call_model(model, inputs))
                        cots = sample_cotangents(workload, out, targets, self.samples, gen)
                        pulled = [[] for _ in calls]
                        for k in range(self.samples):
                            grads = torch.autograd.grad(out, [y for _, _, y in calls], grad_outputs=cots[k].to(out.dtype),
                                                        retain_graph=k + 1 < self.samples, allow_unused=True)
                            for i, g in enumerate(grads):
                                pulled[i].append(g)
                finally:
                    for h in handles:
                        h.remove()
                with torch.no_grad():
                    for (name, args, y), gs in zip(calls, pulled):
                        if any(g is None for g in gs):
                            continue
                        g = torch.stack(gs).double()  # (samples, *y.shape)
                        for oid, dw in errors[name].items():
                            dy = _output_change(modules[name], dw, args).double()
                            s = (g * dy).reshape(self.samples, -1).sum(1)
                            totals[name][oid] += 0.5 * float((s**2).mean()) / len(batches)
                del calls, pulled
        layers = {}
        for info in graph:
            w = weight_matrix(graph.module(info.name))
            errs = {oid: quantization_error(w, spec) for oid, spec in specs.items()}
            d = totals[info.name]
            layers[info.name] = LayerSensitivity(score=fit_score(d, errs), params=info.params, options=d)
        return self.table(workload, layers, batches=len(batches), samples=self.samples)


def _output_change(module: nn.Module, dw: torch.Tensor, args: tuple) -> torch.Tensor:
    """The layer's output change when its weight moves by ``dw`` (bias and nonlinearity-free: the layer is linear in W)."""
    from torch.func import functional_call

    params = {"weight": dw}
    if getattr(module, "bias", None) is not None:
        params["bias"] = torch.zeros_like(module.bias)
    return functional_call(module, params, args)
