"""The user's side of the contract: a model, calibration batches, a loss and an optional evaluator."""
from __future__ import annotations

import hashlib

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import nn

from .errors import WorkloadError

Batch = tuple[Any, Any]


@dataclass(frozen=True)
class TargetSampling:
    """Targets drawn from the model's own output distribution, for gradient-based estimators.

    ``sample(outputs, targets, generator)`` returns new targets for ``loss_fn(outputs, new_targets)``
    such that, over the draws, the outer product of that loss's gradient has the Fisher (or
    Gauss-Newton) matrix of the workload's loss as its expectation. It is what makes a gradient
    score meaningful where the workload's own loss has zero gradient at full precision.
    """

    sample: Callable[[Any, Any, torch.Generator], Any]
    loss_fn: Callable[[Any, Any], torch.Tensor]


@dataclass
class Workload:
    """What every estimator and evaluator needs.

    ``batches`` are ``(inputs, targets)`` pairs; ``inputs`` may be a tensor, a tuple of positional
    arguments or a dict of keyword arguments. ``loss_fn(outputs, targets)`` returns a scalar tensor.
    ``evaluate(model)`` returns metrics (e.g. ``{"accuracy": 0.97}``) used to report before and after.
    ``sampling`` (optional) draws targets from the model's own outputs (see :class:`TargetSampling`).
    """

    model: nn.Module
    batches: Sequence[Batch]
    loss_fn: Callable[[Any, Any], torch.Tensor]
    evaluate: Callable[[nn.Module], dict] | None = None
    name: str = ""
    meta: dict = field(default_factory=dict)
    sampling: TargetSampling | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.model, nn.Module):
            raise WorkloadError(f"workload {self.name!r}: model must be a torch.nn.Module, got {type(self.model).__name__}")
        self.batches = list(self.batches)
        if not self.batches:
            raise WorkloadError(f"workload {self.name!r}: calibration data is empty; give at least one (inputs, targets) batch")
        for i, b in enumerate(self.batches):
            if not (isinstance(b, (tuple, list)) and len(b) == 2):
                raise WorkloadError(f"workload {self.name!r}: calibration batch {i} must be an (inputs, targets) pair, got {type(b).__name__}")
        if not callable(self.loss_fn):
            raise WorkloadError(f"workload {self.name!r}: loss_fn must be callable")

    def loss(self, model: nn.Module | None = None, batch: Batch | None = None) -> torch.Tensor:
        """Loss of ``model`` (default: the workload's) on one batch, checked to be a finite scalar."""
        model = self.model if model is None else model
        inputs, targets = self.batches[0] if batch is None else batch
        out = call_model(model, inputs)
        value = self.loss_fn(out, targets)
        return check_loss(value, self.name)

    def calibration_loss(self, model: nn.Module | None = None) -> float:
        """Mean loss over every calibration batch, without gradients."""
        with torch.no_grad():
            return float(sum(float(self.loss(model, b)) for b in self.batches) / len(self.batches))

    def fingerprint(self) -> str:
        return model_fingerprint(self.model)


def check_loss(value: Any, name: str = "") -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise WorkloadError(f"workload {name!r}: loss_fn must return a tensor, got {type(value).__name__}")
    if value.numel() != 1:
        raise WorkloadError(f"workload {name!r}: loss_fn must return a scalar, got a tensor of shape {tuple(value.shape)}")
    if not torch.isfinite(value).all():
        raise WorkloadError(f"workload {name!r}: the loss is {float(value)} on the calibration data; it must be finite")
    return value.reshape(())


@dataclass(frozen=True)
class StepInputs:
    """A calibration batch that the user's ``forward_step(model, batch)`` runs, instead of calling the model on it."""

    batch: Any
    forward_step: Callable[[nn.Module, Any], Any]


def call_model(model: nn.Module, inputs: Any) -> Any:
    """Call ``model`` with a tensor, a tuple of positional arguments, a dict of keyword arguments, or through a forward step."""
    if isinstance(inputs, StepInputs):
        return inputs.forward_step(model, inputs.batch)
    if isinstance(inputs, dict):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)


def run_hooked(model: nn.Module, batches: Iterable[Batch], handles: Iterable[Any]) -> None:
    """Run ``model`` on every calibration batch without gradients, then remove the hook ``handles`` (also on error).

    The observers (forward hooks that record ranges, row counts, outputs) do their work in the hooks."""
    try:
        with torch.no_grad():
            for inputs, _ in batches:
                call_model(model, inputs)
    finally:
        for h in handles:
            h.remove()


def model_fingerprint(model: nn.Module) -> str:
    """sha256 over parameter names, shapes, dtypes and values: identical weights give identical fingerprints."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(str(t.dtype).encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return "sha256:" + h.hexdigest()


def as_workload(obj: Any, name: str = "") -> Workload:
    if isinstance(obj, Workload):
        if not obj.name:
            obj.name = name
        return obj
    if isinstance(obj, tuple) and len(obj) in (3, 4):
        return Workload(*obj, name=name)
    raise WorkloadError(f"model {name!r} must return an mpq.Workload or a (model, batches, loss_fn) tuple, got {type(obj).__name__}")


def batches_from(items: Iterable[Batch]) -> list[Batch]:
    return list(items)
