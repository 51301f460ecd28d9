"""KV-cache bits as planned entries: one problem layer per attention module, options kv16/kv8/kv4.

A causal LM's attention module with ``k_proj`` and ``v_proj`` caches, per token of context, the
outputs of both (``kv_heads × head_dim`` numbers each). Its entry is named
``<attention module>.kv_cache`` (e.g. ``model.layers.0.self_attn.kv_cache``); its ``params`` are
the cached numbers at ``context_tokens`` tokens, and an option's size is those numbers × bits
(plus one 16-bit scale each for K and V when quantized), so ``--budget mb=`` counts weights and
cache together and every solver handles the entries unchanged. There are no MACs (BitOps 0).

Distortion is measured on the calibration batches: the loss increase with only that module's
K and V fake-quantized (static per-tensor symmetric integers over the calibrated absolute maximum,
as llm-compressor's ``kv_cache_scheme`` with ``strategy: tensor`` stores them), hooked on the
outputs of ``k_proj`` and ``v_proj`` (before RoPE: an approximation of quantizing the cache).
``mpq apply`` installs the same hooks, so evaluation sees the planned cache.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Mapping, Optional, Sequence

from .errors import DocumentError, WorkloadError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from .schema import Plan, PlanLayer, ProblemLayer
    from .workload import Workload

KV_SUFFIX = ".kv_cache"
KV_BITS = (4, 8, 16)
#: One 16-bit scale for K and one for V per quantized cache (static per-tensor).
KV_SCALE_BITS = 2 * 16


def is_kv_cache(name: str) -> bool:
    """Whether a problem or plan layer name is a KV-cache entry."""
    return name.endswith(KV_SUFFIX)


def kv_option_id(bits: int) -> str:
    return f"kv{bits}"


@dataclass(frozen=True)
class KVLayer:
    """One attention module whose K and V are cached: ``per_token`` numbers per token of context."""

    attention: str
    k_proj: str
    v_proj: str
    per_token: int

    @property
    def name(self) -> str:
        return self.attention + KV_SUFFIX


def find_kv_layers(model: "nn.Module") -> list[KVLayer]:
    """Attention modules with ``k_proj`` and ``v_proj`` linear children (Llama, Mistral, Qwen, ...)."""
    from torch import nn

    out = []
    for name, module in model.named_modules():
        k, v = getattr(module, "k_proj", None), getattr(module, "v_proj", None)
        if isinstance(k, nn.Linear) and isinstance(v, nn.Linear):
            out.append(KVLayer(name, f"{name}.k_proj", f"{name}.v_proj", k.out_features + v.out_features))
    return out


def kv_bits_of(option: str) -> int:
    if not option.startswith("kv") or not option[2:].isdigit():
        raise DocumentError(f"KV-cache option {option!r}: expected kv16, kv8 or kv4")
    return int(option[2:])


def kv_problem_layer(layer: KVLayer, tokens: int, bits: Sequence[int], distortion: Mapping[int, float],
                     latency: bool = False) -> "ProblemLayer":
    """The problem entry of one attention module's cache at ``tokens`` tokens of context."""
    from .schema import Option, ProblemLayer

    numbers = layer.per_token * tokens
    options = []
    for b in sorted(set(bits), reverse=True):
        size = numbers * b + (KV_SCALE_BITS if b < 16 else 0)
        options.append(Option(
            id=kv_option_id(b), w_bits=b, format="float" if b >= 16 else "int", bits=size, bytes=-(-size // 8),
            bitops=0, latency_ms=0.0 if latency else None, distortion=0.0 if b >= 16 else float(distortion[b]),
        ))
    return ProblemLayer(name=layer.name, params=numbers, macs=0, shape=[tokens, layer.per_token], options=options)


def check_kv_request(bits: Iterable[int], tokens: Optional[int]) -> list[int]:
    bits = sorted(set(int(b) for b in bits))
    bad = [b for b in bits if b not in KV_BITS]
    if bad:
        raise DocumentError(f"--kv-bits: KV-cache bits are 4, 8 or 16, got {bad}")
    if tokens is None or tokens < 1:
        raise DocumentError("--kv-bits needs --context-tokens N (N >= 1): the cache's size is per token of context")
    return bits


# ----------------------------------------------------------------------------------------------
# fake-quantizing K and V


class _KVQuantizer:
    """Forward hook: the module's output fake-quantized to ``bits`` symmetric levels over ``[-amax, amax]``."""

    def __init__(self, bits: int, amax: float):
        self.bits, self.amax = bits, amax

    def __call__(self, module, args, output):
        import torch

        q = 2 ** (self.bits - 1) - 1
        scale = (self.amax or 1.0) / q
        return (torch.clamp(torch.round(output / scale), -q, q) * scale).to(output.dtype)


def _observe_amax(model: "nn.Module", names: Sequence[str], batches) -> dict[str, float]:
    from .workload import run_hooked

    amax: dict[str, float] = {}

    def record(name):
        def hook(module, args, output):
            amax[name] = max(amax.get(name, 0.0), float(output.detach().abs().max()))
        return hook

    handles = [model.get_submodule(n).register_forward_hook(record(n)) for n in names]
    run_hooked(model, batches, handles)
    return amax


def install_kv_quant(model: "nn.Module", bits: Mapping[str, int], batches) -> list:
    """Fake-quantize the K and V of each KV layer named in ``bits`` (``<attention>.kv_cache`` -> bits); returns hook handles."""
    layers = {l.name: l for l in find_kv_layers(model)}
    unknown = [n for n in bits if n not in layers]
    if unknown:
        raise WorkloadError(f"KV-cache entry {unknown[0]!r}: the model has no attention module with k_proj and v_proj there")
    wanted = {n: b for n, b in bits.items() if b < 16}
    projections = [p for n in wanted for p in (layers[n].k_proj, layers[n].v_proj)]
    amax = _observe_amax(model, projections, batches) if projections else {}
    handles = []
    for n, b in wanted.items():
        for p in (layers[n].k_proj, layers[n].v_proj):
            handles.append(model.get_submodule(p).register_forward_hook(_KVQuantizer(b, amax.get(p, 0.0))))
    return handles


def measure_kv_sensitivity(workload: "Workload", bits: Sequence[int], *, device: str = "cpu") -> dict[str, dict[int, float]]:
    """``{kv entry: {bits: loss increase}}`` with only that module's K and V quantized, on the calibration batches."""
    from mpq.sensitivity._runtime import calibration, check_device, mean_loss, prepared

    layers = find_kv_layers(workload.model)
    if not layers:
        raise WorkloadError(f"workload {workload.name!r}: --kv-bits needs a causal LM with k_proj/v_proj attention modules; found none")
    out: dict[str, dict[int, float]] = {}
    dev = check_device(device)
    with prepared(workload.model, dev) as model:
        batches = calibration(workload, None, dev)
        reference = mean_loss(workload, model, batches)
        for layer in layers:
            out[layer.name] = {}
            for b in bits:
                if b >= 16:
                    continue
                handles = install_kv_quant(model, {layer.name: b}, batches)
                try:
                    out[layer.name][b] = max(0.0, mean_loss(workload, model, batches) - reference)
                finally:
                    for h in handles:
                        h.remove()
    return out


def kv_problem_layers(workload: "Workload", bits: Sequence[int], tokens: int, *, device: str = "cpu",
                      latency: bool = False) -> list["ProblemLayer"]:
    """One planned KV-cache entry per attention module, with measured distortions."""
    bits = check_kv_request(bits, tokens)
    sens = measure_kv_sensitivity(workload, bits, device=device)
    return [kv_problem_layer(l, tokens, bits, sens[l.name], latency) for l in find_kv_layers(workload.model)]


def kv_plan_bits(plan: "Plan") -> dict[str, int]:
    """KV-cache entry -> planned bits."""
    return {l.name: l.w_bits for l in plan.layers if is_kv_cache(l.name)}
