"""What every data-driven estimator shares: device placement, leaving the model as it was, progress bars.

Estimators run the model in eval mode (dropout off, BatchNorm on its running statistics) so that
their results are deterministic; :func:`prepared` restores everything afterwards. None of the
estimators built on these helpers samples anything, so ``seed`` only enters the cache key and the
table's ``meta``; ``probes`` is the number of calibration batches they use (all by default).
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
from typing import Any, Iterable, Iterator, Mapping, Optional, Sequence

import torch
from torch import nn

from mpq.candidates import CandidateSet
from mpq.errors import WorkloadError
from mpq.quant import QuantSpec, fake_quantize, set_weight_matrix, weight_matrix
from mpq.workload import Batch, StepInputs, TargetSampling, Workload, call_model, check_loss

#: How gradient-based estimators get their targets: the workload's own (``empirical``), drawn from the
#: model's output distribution (``sampled``), or ``auto``: sampled where the workload's loss has zero
#: gradient at full precision (``workload.meta["zero_gradient_at_full_precision"]``), else its own.
TARGET_MODES = ("auto", "empirical", "sampled")


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
    hidden = getattr(out, "last_hidden_state", None)  # encoders (transformers' BaseModelOutput)
    if isinstance(hidden, torch.Tensor):
        return hidden
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    raise WorkloadError(f"the model returned {type(out).__name__}; expected a tensor, or an object with .logits or .last_hidden_state")


def _gaussian_cotangent(out: Any, targets: Any, generator: torch.Generator) -> torch.Tensor:
    y = output_tensor(out)
    return torch.randn(y.shape, generator=generator, dtype=torch.float32).to(y.device)


def _cotangent_loss(out: Any, z: torch.Tensor) -> torch.Tensor:
    return (output_tensor(out).float() * z).sum()


#: For workloads without their own sampling: a Gaussian cotangent on the main output, i.e. the
#: Gauss-Newton matrix of a squared error on the outputs.
OUTPUT_GAUSSIAN = TargetSampling(_gaussian_cotangent, _cotangent_loss)


def uses_sampled_targets(workload: Workload, targets: str) -> bool:
    return targets == "sampled" or (targets == "auto" and bool(workload.meta.get("zero_gradient_at_full_precision")))


def sampled_workload(workload: Workload, model: nn.Module, batches: Sequence[Batch], generator: torch.Generator) -> Workload:
    """The workload with targets drawn from the model's own outputs (one draw per sample) and the matching loss."""
    sampling = workload.sampling or OUTPUT_GAUSSIAN
    drawn = []
    with torch.no_grad():
        for inputs, targets in batches:
            drawn.append((inputs, sampling.sample(call_model(model, inputs), targets, generator)))
    return dataclasses.replace(workload, batches=drawn, loss_fn=sampling.loss_fn)


@contextlib.contextmanager
def second_order_attention(model: nn.Module) -> Iterator[None]:
    """Attention that has second derivatives (double backward) inside the block, the model exactly as before after it.

    PyTorch's fused attention kernels (flash, memory-efficient, CPU flash) have no double backward;
    the math kernel has. Hugging Face models also get ``attn_implementation="eager"`` (their own
    matmul-softmax attention) for the block, and their attention setting back afterwards.
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel

    config = getattr(model, "config", None)
    before = getattr(config, "_attn_implementation", None)
    switch = callable(getattr(model, "set_attn_implementation", None)) and before not in (None, "eager")
    saved = _attention_settings(model) if switch else []
    try:
        if switch:
            model.set_attn_implementation("eager")
        with sdpa_kernel(SDPBackend.MATH):
            yield
    finally:
        if switch:
            model.set_attn_implementation(before)
            for cfg, value in saved:  # sub-configs exactly as they were
                cfg._attn_implementation_internal = value


def _attention_settings(model: nn.Module) -> list[tuple[Any, Any]]:
    """Every (sub-)config's attention setting; configs are keyed by identity (they are not hashable)."""
    out, seen = [], set()
    for m in model.modules():
        cfg = getattr(m, "config", None)
        if cfg is not None and id(cfg) not in seen and hasattr(cfg, "_attn_implementation_internal"):
            seen.add(id(cfg))
            out.append((cfg, cfg._attn_implementation_internal))
    return out


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


def return_freed_memory() -> None:
    """Give the C heap's free pages back to the system (glibc ``malloc_trim``; nothing elsewhere).

    Between calibration batches glibc keeps freed blocks of the last batch's graph and temporaries (hundreds
    of MB on the 100M Llama), counted in the process's resident memory: what the OS, a container's limit
    and ``benchmarks/real_model.py`` see.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.lru_cache(maxsize=1)
def _malloc_trim():
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # not glibc (musl, macOS, Windows): no trim to call
        return None
