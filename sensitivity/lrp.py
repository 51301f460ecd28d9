"""LRP-QViT: per-layer contribution scores from layer-wise relevance propagation.

The relevance that starts at the model's output is the target-class logit of each sample when the
targets are class indices of the output's last dimension (classifiers, language models), otherwise
``|y|`` of every output. It is propagated back to every quantizable layer's output ``y_l`` with
LRP-0 / LRP-ε, and a layer's relevance is the mean over samples of ``sum |R_l|``. Its contribution is
that relevance divided by the total over all layers (LRP-QViT's normalised contribution score), and
``score = contribution / params`` (spread evenly over the weights, as HAWQ divides a trace by the
weight count), so the cost model's ``score × ||Q(W) - W||²`` is the contribution times the layer's
mean squared weight error. ``probes`` caps the calibration batches.

Two back ends (``backend="auto"`` picks):

- ``captum``: Captum's ``LayerLRP`` with its ε-rule (ε = 1e-9) for Linear, Conv2d, pooling and
  BatchNorm and pass-through for ReLU/Tanh/Dropout. Used when it covers the whole model: every leaf
  module is one Captum has a rule for, the model traces with torch.fx and its graph has no
  functional operation besides flatten/reshape/ReLU, and it is a classifier with class targets.
- ``gradient``: everything else (transformers, residual networks), as gradient × activation on a
  forward pass modified so that it equals LRP with the conservative rules of Ali et al. (ICML 2022,
  "XAI for Transformers"), the rules LRP-QViT builds on:

  * Linear / Conv / Embedding: LRP-0 (the z-rule), which gradient × input computes exactly.
  * attention: the AH-rule. The attention weights (every softmax, including inside
    ``nn.MultiheadAttention`` and ``scaled_dot_product_attention``) are held constant, so
    relevance flows through the values only, never through queries or keys.
  * LayerNorm / RMSNorm / GroupNorm: the LN-rule. The standard deviation (root mean square) is
    held constant, so the normalization (centring included) is a linear map of its input and
    conserves relevance; its affine bias absorbs some, as every bias does.
  * residual adds ``a + b``: split in proportion to the summands (``R_a = a/(a+b) · R``), which is
    what the gradient of a sum does under gradient × input; relevance is conserved.
  * element-wise activations (ReLU, GELU, SiLU, Tanh, ...): the identity rule, the activation's gate
    ``f(x)/x`` held constant.
  * elementwise products of two activations (gated MLPs) follow the plain gradient; both factors
    then receive the full relevance, a known over-count of that rule.

Biases absorb relevance, so conservation is exact only without biases.
"""
from __future__ import annotations

import contextlib
import operator
import warnings
from typing import Any, Callable, Iterator, Literal, Mapping, Optional

import torch
import torch.nn.functional as F
from torch import nn

from pydantic import Field

from mpq.errors import WorkloadError
from mpq.extras import require
from mpq.graph import LayerGraph
from mpq.quant import QuantSpec
from mpq.schema import LayerSensitivity, SensitivityTable
from mpq.workload import Batch, Workload, call_model

from ._runtime import calibration, check_device, output_tensor, prepared, progress
from .base import CalibrationSettings, Estimator, register_estimator

BACKENDS = ("auto", "captum", "gradient")

NORMS: tuple[type, ...] = (nn.LayerNorm, nn.GroupNorm) + ((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ())
ACTIVATIONS = (nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.ELU, nn.LeakyReLU, nn.Softplus, nn.Mish, nn.Hardswish, nn.ReLU6)


# ----------------------------------------------------------------------------------------------
# The starting relevance


def target_scores(out: torch.Tensor, targets: Any) -> Optional[torch.Tensor]:
    """Per-sample target logits when ``targets`` are class indices of ``out``'s last dimension, else None."""
    if (
        isinstance(targets, torch.Tensor) and not targets.is_floating_point() and not targets.is_complex()
        and out.dim() >= 2 and tuple(targets.shape) == tuple(out.shape[:-1])
    ):
        valid = (targets >= 0) & (targets < out.shape[-1])  # e.g. -100 = ignored positions of a language model
        picked = out.gather(-1, targets.clamp(0, out.shape[-1] - 1).unsqueeze(-1)).squeeze(-1)
        return picked * valid
    return None


def start_relevance(out: torch.Tensor, targets: Any) -> torch.Tensor:
    """The scalar whose gradient × activation gives the relevance: summed target logits, or summed |y|."""
    picked = target_scores(out, targets)
    if picked is not None:
        return picked.sum()
    return (out * out.detach().sign()).sum()


# ----------------------------------------------------------------------------------------------
# The gradient back end: a forward pass whose gradient × activation is LRP with Ali et al.'s rules


def _held(fn: Callable) -> Callable:
    def held(*args, **kwargs):
        return fn(*args, **kwargs).detach()

    return held


def _sdpa_held(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    """scaled_dot_product_attention with the attention weights held constant (AH-rule)."""
    scale = query.shape[-1] ** -0.5 if scale is None else scale
    if enable_gqa and key.shape[-3] != query.shape[-3]:
        rep = query.shape[-3] // key.shape[-3]
        key, value = key.repeat_interleave(rep, -3), value.repeat_interleave(rep, -3)
    scores = (query @ key.transpose(-2, -1)) * scale
    L, S = query.shape[-2], key.shape[-2]
    if is_causal:
        scores = scores.masked_fill(~torch.ones(L, S, dtype=torch.bool, device=query.device).tril(), float("-inf"))
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool else scores + attn_mask
    return torch.softmax(scores, dim=-1).detach() @ value


@contextlib.contextmanager
def _attention_held() -> Iterator[None]:
    """Every softmax (and fused attention) inside the block returns constants: relevance skips Q and K."""
    saved = [(F, "softmax", F.softmax), (torch, "softmax", torch.softmax), (torch.Tensor, "softmax", torch.Tensor.softmax),
             (F, "scaled_dot_product_attention", F.scaled_dot_product_attention)]
    F.softmax = _held(saved[0][2])
    torch.softmax = _held(saved[1][2])
    torch.Tensor.softmax = _held(saved[2][2])
    F.scaled_dot_product_attention = _sdpa_held
    try:
        yield
    finally:
        for owner, attr, fn in saved:
            setattr(owner, attr, fn)


def _norm_hook(module: nn.Module, args: tuple, out: Any) -> Any:
    """LN-rule: the normalization with its standard deviation held constant (same value, linear in the input)."""
    x = args[0] if args else None
    if not isinstance(x, torch.Tensor) or not isinstance(out, torch.Tensor):
        return None
    if isinstance(module, nn.GroupNorm):
        shape = x.shape
        g = x.reshape(shape[0], module.num_groups, -1)
        std = (g.var(-1, unbiased=False, keepdim=True) + module.eps).sqrt()
        y = ((g - g.mean(-1, keepdim=True)) / std.detach()).reshape(shape)
        if module.affine:
            view = (1, -1) + (1,) * (x.dim() - 2)
            y = y * module.weight.reshape(view) + module.bias.reshape(view)
        return y
    dims = tuple(range(-len(module.normalized_shape), 0))
    eps = module.eps if module.eps is not None else torch.finfo(x.dtype).eps
    if isinstance(module, nn.LayerNorm):
        centred = x - x.mean(dims, keepdim=True)
        y = centred / (x.var(dims, unbiased=False, keepdim=True) + eps).sqrt().detach()
    else:  # RMSNorm
        y = x / (x.pow(2).mean(dims, keepdim=True) + eps).sqrt().detach()
    if getattr(module, "weight", None) is not None:
        y = y * module.weight
    if getattr(module, "bias", None) is not None:
        y = y + module.bias
    return y


def _identity_hook(module: nn.Module, args: tuple, out: Any) -> Any:
    """Identity rule: ``f(x) = x · (f(x)/x)`` with the gate held constant."""
    x = args[0] if args else None
    if not isinstance(x, torch.Tensor) or not isinstance(out, torch.Tensor) or x.shape != out.shape:
        return None
    safe = torch.where(x == 0, torch.ones_like(x), x)
    gate = torch.where(x == 0, torch.zeros_like(x), out / safe).detach()
    return x * gate


def abs_sum(r: torch.Tensor) -> torch.Tensor:
    """Per-sample ``sum |R|``: how much relevance passes through a layer, whatever its sign."""
    return r.detach().double().abs().reshape(r.shape[0], -1).sum(1)


def gradient_relevance(
    model: nn.Module, layers: Mapping[str, nn.Module], batch: Batch, reduce: Callable = abs_sum
) -> dict[str, torch.Tensor]:
    """Per-sample ``reduce(R)`` at each layer's output (summed over the layer's calls), by gradient × activation.

    Under the AH-rule no relevance reaches the outputs of query and key projections; such a layer
    takes the relevance of its input instead (the relevance its attention block receives there).
    """
    calls: list[tuple[str, Optional[torch.Tensor], torch.Tensor]] = []

    def record(name):
        def fn(mod, args, out):
            if isinstance(out, torch.Tensor) and out.requires_grad:
                x = args[0] if args and isinstance(args[0], torch.Tensor) and args[0].requires_grad else None
                calls.append((name, x, out))
        return fn

    handles = []
    for m in model.modules():
        if isinstance(m, NORMS):
            handles.append(m.register_forward_hook(_norm_hook))
        elif isinstance(m, ACTIVATIONS):
            handles.append(m.register_forward_hook(_identity_hook))
    handles += [m.register_forward_hook(record(name)) for name, m in layers.items()]
    inputs, targets = batch
    inputs = _requiring_grad(inputs)
    try:
        with torch.enable_grad(), _attention_held():
            out = output_tensor(call_model(model, inputs))
            f = start_relevance(out, targets)
            wrt = [y for _, _, y in calls] + [x for _, x, _ in calls if x is not None]
            grads = list(torch.autograd.grad(f, wrt, allow_unused=True)) if wrt else []
    finally:
        for h in handles:
            h.remove()
    out_grads, in_grads = grads[: len(calls)], iter(grads[len(calls):])
    rel: dict[str, torch.Tensor] = {}
    for (name, x, y), g in zip(calls, out_grads):
        gx = next(in_grads) if x is not None else None
        if g is not None:
            r = reduce(y.detach() * g)
        elif gx is not None:
            r = reduce(x.detach() * gx)
        else:
            r = reduce(torch.zeros_like(y))
        rel[name] = rel.get(name, 0) + r
    return rel


def _requiring_grad(inputs: Any) -> Any:
    """Floating-point model inputs made to require grad, so the first layer's input carries relevance too."""
    if isinstance(inputs, torch.Tensor):
        return inputs.detach().requires_grad_(True) if inputs.is_floating_point() else inputs
    if isinstance(inputs, dict):
        return {k: _requiring_grad(v) for k, v in inputs.items()}
    if isinstance(inputs, (tuple, list)):
        return type(inputs)(_requiring_grad(v) for v in inputs)
    return inputs


# ----------------------------------------------------------------------------------------------
# The Captum back end


_CAPTUM_FUNCTIONS = {torch.flatten, F.relu, torch.relu, operator.getitem}
_CAPTUM_METHODS = {"view", "reshape", "flatten", "size", "relu", "contiguous"}


def captum_covers(model: nn.Module, batch: Batch) -> bool:
    """True when Captum's LRP has a rule for every part of ``model`` and its targets are class indices."""
    try:
        from captum.attr._core.lrp import SUPPORTED_LAYERS_WITH_RULES, SUPPORTED_NON_LINEAR_LAYERS
    except ImportError:
        return False
    supported = set(SUPPORTED_LAYERS_WITH_RULES) | set(SUPPORTED_NON_LINEAR_LAYERS)
    leaves = [m for m in model.modules() if not list(m.children())]
    if any(type(m) not in supported for m in leaves) or len(set(map(id, leaves))) != len(leaves):
        return False
    inputs, targets = batch
    if not isinstance(inputs, torch.Tensor):
        return False
    try:
        traced = torch.fx.symbolic_trace(model)
    except Exception:  # untraceable models may hide functional operations: use the gradient back end
        return False
    called = [n.target for n in traced.graph.nodes if n.op == "call_module"]
    if len(called) != len(set(called)):  # a module used twice breaks Captum's LRP
        return False
    for node in traced.graph.nodes:
        if node.op == "call_function" and node.target not in _CAPTUM_FUNCTIONS:
            return False
        if node.op == "call_method" and node.target not in _CAPTUM_METHODS:
            return False
    with torch.no_grad():
        out = call_model(model, inputs)
    return isinstance(out, torch.Tensor) and out.dim() == 2 and target_scores(out, targets) is not None


def captum_relevance(
    model: nn.Module, layers: Mapping[str, nn.Module], batch: Batch, reduce: Callable = abs_sum
) -> dict[str, torch.Tensor]:
    """Per-sample ``reduce(R)`` at each layer's output, by Captum's LayerLRP (ε-rule)."""
    from captum.attr import LayerLRP

    names = list(layers)
    inputs, targets = batch
    modules = list(model.modules())
    had = [(m, set(vars(m))) for m in modules]
    try:
        with torch.enable_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "Input Tensor 0 did not already require gradients"
            rel = LayerLRP(model, [layers[n] for n in names]).attribute(inputs.detach().clone(), target=targets)
    finally:
        for m, before in had:  # Captum leaves its ``activations`` (and on errors ``rule``) on the modules
            for attr in set(vars(m)) - before:
                delattr(m, attr)
    return {n: reduce(r) for n, r in zip(names, rel)}


# ----------------------------------------------------------------------------------------------


@register_estimator
class LRPEstimator(Estimator):
    """LRP-QViT: each layer's share of the output relevance (Captum's LRP where it covers the model)."""

    name = "lrp"

    class Settings(CalibrationSettings):
        backend: Literal[BACKENDS] = Field("auto", description="captum's LRP, gradient x input, or captum where it covers the model")

    def relevance(self, workload: Workload, graph: LayerGraph) -> tuple[dict[str, float], str, int]:
        """Mean per-sample ``sum |R|`` at each layer's output, the back end used and the batch count."""
        device = check_device(self.device)
        layers = {name: graph.module(name) for name in graph.names}
        with prepared(workload.model, device, grad=True) as model:
            for p in model.parameters():
                p.requires_grad_(False)
            for m in layers.values():  # only so that every layer output carries a gradient
                m.weight.requires_grad_(True)
            batches = calibration(workload, self.probes, device)
            backend = self.backend
            if backend == "auto":
                backend = "captum" if captum_covers(model, batches[0]) else "gradient"
            elif backend == "captum":
                require("captum", f"estimator {self.name!r} with backend 'captum'")
                if not captum_covers(model, batches[0]):
                    raise WorkloadError(
                        f"estimator {self.name!r}: Captum's LRP does not cover this model (a layer or operation without "
                        "a Captum rule, or targets that are not class indices); use backend 'gradient' or 'auto'"
                    )
            run = captum_relevance if backend == "captum" else gradient_relevance
            totals = {name: 0.0 for name in layers}
            samples = 0
            for batch in progress(batches, desc=f"{self.name} ({backend})", quiet=self.quiet):
                rel = run(model, layers, batch)
                for name in layers:
                    if name in rel:
                        totals[name] += float(rel[name].sum())
                samples += next(iter(rel.values())).numel() if rel else 0
        mean = {name: t / max(samples, 1) for name, t in totals.items()}
        return mean, backend, len(batches)

    def estimate(self, workload: Workload, graph: LayerGraph, options: Optional[Mapping[str, QuantSpec]] = None) -> SensitivityTable:
        relevance, backend, n = self.relevance(workload, graph)
        total = sum(relevance.values())
        if not total > 0:
            raise WorkloadError(
                f"estimator {self.name!r}: no relevance reached any layer (the model's output does not depend on "
                "its quantizable layers on this data, or every target score is zero)"
            )
        layers = {}
        for info in graph:
            contribution = relevance[info.name] / total
            layers[info.name] = LayerSensitivity(
                score=contribution / max(info.params, 1), params=info.params,
                relevance=relevance[info.name], contribution=contribution,
            )
        return self.table(workload, layers, backend=backend, batches=n)
