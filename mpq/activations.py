"""Activation fake-quantization: ranges calibrated on the calibration data, applied by forward pre-hooks.

A planned layer with ``a_bits`` gets its input quantized per tensor, asymmetrically, to ``a_bits``
levels over a static range observed on the calibration batches (min/max, or a percentile to
ignore outliers). Integer inputs (token ids into an embedding) pass through unchanged: they are
already exact. The hooks are removable, so a model can be measured with and without them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import torch
from torch import nn

from .errors import WorkloadError
from .workload import Batch, run_hooked

OBSERVERS = ("minmax", "percentile")
#: Activation formats: ``int`` per tensor over a calibrated range (what ``apply`` installs),
#: ``int-token`` dynamic per token (each row of the last dimension; each position of a conv input),
#: ``fp8_e4m3`` with a per-tensor scale from the calibrated absolute maximum.
ACTIVATION_FORMATS = ("int", "int-token", "fp8_e4m3")


def activation_id(bits: int, fmt: str = "int") -> str:
    """The activation quantization's id in a sensitivity table: ``a8``, ``a4-token``, ``a8-fp8``."""
    return {"int": f"a{bits}", "int-token": f"a{bits}-token", "fp8_e4m3": f"a{bits}-fp8"}[fmt]


@dataclass
class ActivationQuantizer:
    """Fake-quantizes a module's first input to ``bits`` uniform levels over ``[lo, hi]``."""

    bits: int
    lo: float
    hi: float

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        levels = 2**self.bits - 1
        lo, hi = min(self.lo, 0.0), max(self.hi, 0.0)  # zero stays exactly representable (padding, ReLU)
        scale = (hi - lo) / levels if hi > lo else 1.0
        zero = round(-lo / scale)
        q = torch.clamp(torch.round(x / scale) + zero, 0, levels)
        return ((q - zero) * scale).to(x.dtype)

    def __call__(self, module: nn.Module, args: tuple) -> tuple | None:
        if not args or not isinstance(args[0], torch.Tensor) or not args[0].is_floating_point():
            return None
        return (self.quantize(args[0]), *args[1:])


@dataclass
class PerTokenQuantizer:
    """Fake-quantizes a module's first input per token (dynamic asymmetric range of each token) to ``bits``."""

    bits: int

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        dim = 1 if x.dim() == 4 else -1  # a conv input's channels, else the features of each token
        lo = x.amin(dim=dim, keepdim=True).clamp(max=0)
        hi = x.amax(dim=dim, keepdim=True).clamp(min=0)
        levels = 2**self.bits - 1
        scale = ((hi - lo) / levels).clamp(min=1e-12)
        zero = torch.round(-lo / scale)
        q = torch.clamp(torch.round(x / scale) + zero, 0, levels)
        return ((q - zero) * scale).to(x.dtype)

    __call__ = ActivationQuantizer.__call__


@dataclass
class Fp8Quantizer:
    """Fake-quantizes a module's first input to fp8 e4m3 with one scale from the calibrated absolute maximum."""

    lo: float
    hi: float
    bits: int = 8

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        amax = max(abs(self.lo), abs(self.hi)) or 1.0
        scale = amax / 448.0  # e4m3's largest finite value
        q = torch.clamp(x.float() / scale, -448.0, 448.0).to(torch.float8_e4m3fn)
        return (q.float() * scale).to(x.dtype)

    __call__ = ActivationQuantizer.__call__


def make_activation_quantizer(bits: int, fmt: str, lo: float, hi: float):
    """The pre-hook quantizer for one activation format (see ``ACTIVATION_FORMATS``)."""
    if fmt == "int":
        return ActivationQuantizer(bits, lo, hi)
    if fmt == "int-token":
        return PerTokenQuantizer(bits)
    if fmt == "fp8_e4m3":
        if bits != 8:
            raise WorkloadError(f"activation format fp8_e4m3 stores 8 bits, got a_bits={bits}")
        return Fp8Quantizer(lo, hi)
    raise WorkloadError(f"activation format {fmt!r} is unknown; expected one of {list(ACTIVATION_FORMATS)}")


@dataclass
class ActivationHooks:
    """The installed quantizers (layer name -> quantizer) and their hook handles; ``remove()`` undoes them."""

    quantizers: dict[str, ActivationQuantizer] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    handles: list[Any] = field(default_factory=list, repr=False)

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()


def observe_ranges(
    model: nn.Module,
    modules: Mapping[str, nn.Module],
    batches: Iterable[Batch],
    observer: str = "minmax",
    percentile: float = 99.99,
) -> dict[str, tuple[float, float]]:
    """Input range of each module over the calibration batches (one forward pass per batch)."""
    if observer not in OBSERVERS:
        raise WorkloadError(f"activation observer {observer!r} is unknown; expected one of {list(OBSERVERS)}")
    seen: dict[str, list[torch.Tensor]] = {name: [] for name in modules}
    lo_hi: dict[str, list[float]] = {}

    def record(name: str):
        def hook(module, args):
            x = args[0] if args else None
            if not isinstance(x, torch.Tensor) or not x.is_floating_point():
                return
            x = x.detach().float().flatten()
            if observer == "minmax":
                cur = lo_hi.get(name)
                lo, hi = float(x.min()), float(x.max())
                lo_hi[name] = [lo, hi] if cur is None else [min(cur[0], lo), max(cur[1], hi)]
            else:
                seen[name].append(x)

        return hook

    handles = [m.register_forward_pre_hook(record(n)) for n, m in modules.items()]
    run_hooked(model, batches, handles)
    if observer == "percentile":
        q = torch.tensor([(100 - percentile) / 100, percentile / 100])
        for name, xs in seen.items():
            if xs:
                x = torch.cat(xs)
                if x.numel() > 1_000_000:  # torch.quantile's size limit; a strided sample keeps the tails' order
                    x = x.sort().values[:: -(-x.numel() // 1_000_000)]
                lo, hi = torch.quantile(x, q).tolist()
                lo_hi[name] = [lo, hi]
    return {n: (v[0], v[1]) for n, v in lo_hi.items()}


def install_activation_quant(
    model: nn.Module,
    bits: Mapping[str, int],
    batches: Iterable[Batch],
    observer: str = "minmax",
    percentile: float = 99.99,
) -> ActivationHooks:
    """Calibrate the input range of each named module and fake-quantize its input to ``bits[name]`` bits."""
    modules = {name: model.get_submodule(name) for name in bits}
    ranges = observe_ranges(model, modules, batches, observer, percentile)
    hooks = ActivationHooks()
    for name, module in modules.items():
        if name not in ranges:
            hooks.skipped[name] = "its inputs are integers (ids) or the calibration batches never reach it"
            continue
        lo, hi = ranges[name]
        quantizer = ActivationQuantizer(bits[name], lo, hi)
        hooks.quantizers[name] = quantizer
        hooks.handles.append(module.register_forward_pre_hook(quantizer))
    return hooks


def remove_activation_quant(model: nn.Module) -> None:
    """Remove the activation hooks :func:`mpq.apply.apply_plan` installed on ``model``."""
    hooks = getattr(model, "_mpq_activation_hooks", None)
    if hooks is not None:
        hooks.remove()
        model._mpq_activation_hooks = None
