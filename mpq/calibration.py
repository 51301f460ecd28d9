"""Calibration data as users hold it (a DataLoader of dicts, tuples or tensors) -> an :class:`mpq.Workload`.

This is the data side of ``mpq.plan(model, data, loss=..., forward_step=...)``, in the manner of
ModelOpt's ``auto_quantize(forward_step=, loss_func=)``:

- ``forward_step(model, batch) -> outputs`` runs the model on one batch. Without it, a dict batch is
  ``model(**batch)``, an ``(inputs, targets)`` pair is ``model(inputs)`` and a tensor is ``model(tensor)``.
- ``loss(outputs, targets) -> scalar tensor``, where ``targets`` is the second item of an
  ``(inputs, targets)`` pair, and the whole batch for a dict or a tensor batch or when
  ``forward_step`` is given. Without it: the model's own ``outputs.loss`` when it returns one
  (Hugging Face models given ``labels``), otherwise self-distillation, the mean squared error of
  the output against the full-precision model's own output on the same batch, relative to its
  mean square (label-free; zero with zero gradient at full precision, so use a Hessian or
  measured estimator with it).
"""
from __future__ import annotations

from itertools import islice
from typing import Any, Callable, Iterable, Optional

import torch
from torch import nn

from .errors import WorkloadError
from .workload import StepInputs, Workload, call_model

#: Calibration batches taken from ``data`` when ``max_batches`` is not given.
DEFAULT_MAX_BATCHES = 16

ForwardStep = Callable[[nn.Module, Any], Any]
LossFn = Callable[[Any, Any], torch.Tensor]


def take_batches(data: Any, max_batches: Optional[int]) -> list:
    """The first ``max_batches`` batches of a DataLoader or any iterable (a single tensor is one batch)."""
    if max_batches is not None and (isinstance(max_batches, bool) or not isinstance(max_batches, int) or max_batches < 1):
        raise WorkloadError(f"max_batches: expected a positive number of batches or None, got {max_batches!r}")
    if isinstance(data, (torch.Tensor, dict)):
        return [data]
    try:
        iterator = iter(data)
    except TypeError:
        raise WorkloadError(
            f"data: expected a DataLoader or an iterable of batches (dicts, (inputs, targets) pairs or tensors), "
            f"got {type(data).__name__}"
        ) from None
    batches = list(islice(iterator, max_batches))
    if not batches:
        raise WorkloadError("data: the calibration data yielded no batch")
    return batches


def _split(batch: Any, index: int, forward_step: Optional[ForwardStep]) -> tuple[Any, Any]:
    """``(inputs, targets)`` of one batch as the Workload contract holds them."""
    if forward_step is not None:
        return StepInputs(batch, forward_step), batch
    if isinstance(batch, dict):
        return batch, batch
    if isinstance(batch, torch.Tensor):
        return batch, batch
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        return batch[0], batch[1]
    raise WorkloadError(
        f"data: batch {index} is a {type(batch).__name__}"
        + (f" of {len(batch)} items" if isinstance(batch, (tuple, list)) else "")
        + "; expected a dict of model keyword arguments, an (inputs, targets) pair or a tensor, "
        "or give forward_step=lambda model, batch: ... to run the model on it"
    )


def main_output(out: Any) -> torch.Tensor:
    """The tensor self-distillation compares: the output itself, ``.logits``, ``.last_hidden_state`` or the first item."""
    if isinstance(out, torch.Tensor):
        return out
    for attr in ("logits", "last_hidden_state"):
        value = getattr(out, attr, None)
        if value is None and isinstance(out, dict):
            value = out.get(attr)
        if isinstance(value, torch.Tensor):
            return value
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    raise WorkloadError(
        f"the model returned {type(out).__name__}, which holds no tensor to compare; give loss=lambda outputs, targets: ..."
    )


def model_loss(outputs: Any, targets: Any) -> torch.Tensor:
    """The loss the model computed itself (``outputs.loss``, e.g. a Hugging Face model given ``labels``)."""
    return outputs["loss"] if isinstance(outputs, dict) else outputs.loss


def self_distillation(outputs: Any, reference: torch.Tensor) -> torch.Tensor:
    """Mean squared error of the output against the full-precision output, relative to its mean square."""
    out = main_output(outputs).float()
    if out.shape != reference.shape:
        raise WorkloadError(f"self-distillation: the output has shape {tuple(out.shape)}, the full-precision one {tuple(reference.shape)}")
    return ((out - reference) ** 2).sum() / (reference**2).sum().clamp(min=1e-12)


def _has_own_loss(out: Any) -> bool:
    value = out.get("loss") if isinstance(out, dict) else getattr(out, "loss", None)
    return isinstance(value, torch.Tensor)


def calibration_workload(
    model: nn.Module,
    data: Any,
    *,
    loss: Optional[LossFn] = None,
    forward_step: Optional[ForwardStep] = None,
    evaluate: Optional[Callable[[nn.Module], dict]] = None,
    max_batches: Optional[int] = DEFAULT_MAX_BATCHES,
    name: str = "",
) -> Workload:
    """A Workload from a model and its calibration data; the default loss is chosen as the module docstring says."""
    if not isinstance(model, nn.Module):
        raise WorkloadError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if loss is not None and not callable(loss):
        raise WorkloadError(f"loss must be callable as loss(outputs, targets), got {type(loss).__name__}")
    if forward_step is not None and not callable(forward_step):
        raise WorkloadError(f"forward_step must be callable as forward_step(model, batch), got {type(forward_step).__name__}")
    name = name or type(model).__name__
    pairs = [_split(b, i, forward_step) for i, b in enumerate(take_batches(data, max_batches))]
    meta: dict = {"source": "mpq.plan", "forward_step": getattr(forward_step, "__qualname__", None)}
    if loss is None:
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                first = call_model(model, pairs[0][0])
                if _has_own_loss(first):
                    loss, meta["loss"] = model_loss, "the model's own outputs.loss"
                else:
                    pairs = [(inputs, main_output(call_model(model, inputs)).detach().float()) for inputs, _ in pairs]
                    loss, meta["loss"] = self_distillation, "self-distillation against the full-precision output"
                    meta["zero_gradient_at_full_precision"] = True
        finally:
            model.train(was_training)
    workload = Workload(model=model, batches=pairs, loss_fn=loss, evaluate=evaluate, name=name, meta=meta)
    with torch.no_grad():
        workload.loss()  # a loss that is not a finite scalar fails here, named, rather than inside an estimator
    return workload
