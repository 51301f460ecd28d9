"""What every data-driven estimator shares: device placement, leaving the model as it was, progress bars.

Estimators run the model in eval mode (dropout off, BatchNorm on its running statistics) so that
their results are deterministic; :func:`prepared` restores everything afterwards. None of the
estimators built on these helpers samples anything, so ``seed`` only enters the cache key and the
table's ``meta``; ``probes`` is the number of calibration batches they use (all by default).
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterable, Iterator, Mapping, Optional, Sequence

import torch
from torch import nn

from mpq.candidates import CandidateSet
from mpq.errors import WorkloadError
from mpq.quant import QuantSpec, fake_quantize, set_weight_matrix, weight_matrix
from mpq.workload import Batch, StepInputs, Workload, call_model, check_loss


def check_device(device: str) -> torch.device:
    """``cpu`` or ``cuda[:N]``; CUDA asked for on a machine without it is an error, not a silent CPU run."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise WorkloadError(f"device: expected 'cpu' or 'cuda', got {device!r}") from None
    if dev.type not in ("cpu", "cuda"):
        raise WorkloadError(f"device: expected 'cpu' or 'cuda', got {device!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise WorkloadError("device: 'cuda' was asked for, but PyTorch sees no CUDA device here; use --device cpu")
    return dev


def to_device(obj: Any, device: torch.device) -> Any:
    """Tensors anywhere inside tuples, lists and dicts moved to ``device``."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, StepInputs):
        return StepInputs(to_device(obj.batch, device), obj.forward_step)
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (tuple, list)):
        return type(obj)(to_device(v, device) for v in obj)
    return obj


def _model_device(model: nn.Module) -> torch.device:
    for t in list(model.parameters()) + list(model.buffers()):
        return t.device
    return torch.device("cpu")


@contextlib.contextmanager
def prepared(model: nn.Module, device: torch.device, *, grad: bool = False) -> Iterator[nn.Module]:
    """The model on ``device`` in eval mode; on exit its device, mode, ``requires_grad`` flags and ``.grad``
    fields are put back exactly as they were (weights are restored by the code that changes them)."""
    home = _model_device(model)
    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    grads = [p.grad for p in params]
    modes = {m: m.training for m in model.modules()}
    try:
        model.to(device)
        model.eval()
        for p in params:
            p.grad = None
            if not grad:
                p.requires_grad_(False)
        yield model
    finally:
        model.to(home)
        for p, flag, g in zip(params, flags, grads):
            p.requires_grad_(flag)
            p.grad = g
        for m, mode in modes.items():
            m.training = mode


def calibration(workload: Workload, probes: Optional[int], device: torch.device) -> list[Batch]:
    """The calibration batches to use (the first ``probes`` of them, or all), on ``device``."""
    batches = workload.batches if probes is None else workload.batches[: int(probes)]
    return [to_device(b, device) for b in batches]


def batch_loss(workload: Workload, model: nn.Module, batch: Batch) -> torch.Tensor:
    """The workload's loss on one batch, checked to be a finite scalar (naming the problem otherwise)."""
    inputs, targets = batch
    return check_loss(workload.loss_fn(call_model(model, inputs), targets), workload.name)


def mean_loss(workload: Workload, model: nn.Module, batches: Sequence[Batch]) -> float:
    with torch.no_grad():
        return float(sum(float(batch_loss(workload, model, b)) for b in batches) / len(batches))


def output_tensor(out: Any) -> torch.Tensor:
    """The main output tensor of a model call: the tensor itself, ``.logits``, ``["logits"]`` or the first element."""
    if isinstance(out, torch.Tensor):
        return out
    logits = getattr(out, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(out, Mapping) and isinstance(out.get("logits"), torch.Tensor):
        return out["logits"]
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    raise WorkloadError(f"the model returned {type(out).__name__}; expected a tensor, or an object with .logits")


@contextlib.contextmanager
def quantized(module: nn.Module, spec: QuantSpec) -> Iterator[None]:
    """``module``'s weight fake-quantized to ``spec`` inside the block, restored bit-for-bit after it."""
    saved = module.weight.detach().clone()
    try:
        set_weight_matrix(module, fake_quantize(weight_matrix(module), spec))
        yield
    finally:
        with torch.no_grad():
            module.weight.copy_(saved)


@contextlib.contextmanager
def all_quantized(pairs: Iterable[tuple[nn.Module, QuantSpec]]) -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        for module, spec in pairs:
            stack.enter_context(quantized(module, spec))
        yield


def candidate_options(options: Optional[Mapping[str, QuantSpec]], estimator: str) -> dict[str, QuantSpec]:
    """The quantized (non-float) options to measure; the default candidate set when none are given."""
    options = CandidateSet().specs() if options is None else options
    measured = {k: v for k, v in options.items() if v.format != "float"}
    if not measured:
        raise WorkloadError(
            f"estimator {estimator!r} measures quantized options, but every candidate option keeps the layer in float; "
            "give at least one bit-width below 16"
        )
    return measured


def fit_score(distortions: Mapping[str, float], errors: Mapping[str, float]) -> float:
    """Least-squares slope of ``distortion ≈ score × ||Q(W) - W||²`` over the measured options.

    It makes ``score`` a summary consistent with the cost model's default formula, for tools that
    read only ``score``; the cost model itself uses the per-option distortions.
    """
    num = sum(distortions[k] * errors[k] for k in distortions)
    den = sum(errors[k] ** 2 for k in distortions)
    return num / den if den > 0 else 0.0


def progress(iterable: Iterable, *, total: Optional[int] = None, desc: str = "", quiet: bool = False):
    """A progress bar on stderr (see :func:`mpq.console.bar`; nothing when ``quiet``)."""
    from mpq.console import bar

    return bar(iterable, total=total, desc=desc, quiet=quiet)
