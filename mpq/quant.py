"""Quantizers: the same code measures ``||Q(W) - W||^2`` for the cost model and applies plans.

Weights are handled as a 2-D matrix ``[out_channels, inputs]`` (output first; a conv kernel is
flattened over its input channels and taps). Formats register a fake-quantizer by name, torchao
style: adding a format is one entry in :data:`mpq.schema.NUMBER_FORMATS` (what documents and the
size convention know of it) plus its quantizer here, and touches no central switch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
from pydantic import ConfigDict
from torch import nn

from .registry import RegistryError, register
from .schema import NUMBER_FORMATS, STORAGE_FIELDS, StorageArgs


class QuantSpec(StorageArgs):
    """How to store one layer's weight: the schema's storage fields, frozen (hashable) for torch-side use.

    Positional arguments follow the field order (``QuantSpec(4, 128, "int")``); the schema's
    validator refuses the same combinations it refuses in a problem or plan.
    """

    model_config = ConfigDict(frozen=True)

    def __init__(self, *args: Any, **fields: Any):
        if len(args) > len(STORAGE_FIELDS):
            raise TypeError(f"QuantSpec takes at most {len(STORAGE_FIELDS)} positional arguments ({', '.join(STORAGE_FIELDS)})")
        super().__init__(**dict(zip(STORAGE_FIELDS, args)), **fields)

    @classmethod
    def of(cls, obj) -> "QuantSpec":
        """Build from any object with the storage fields (schema ``Option``, ``PlanLayer``)."""
        return cls(**{f: getattr(obj, f) for f in STORAGE_FIELDS})


FakeQuantizer = Callable[[torch.Tensor, QuantSpec], torch.Tensor]
#: Format name -> its fake-quantizer. Every format here is also in :data:`mpq.schema.NUMBER_FORMATS`.
QUANTIZERS: dict[str, FakeQuantizer] = {}


def register_quantizer(name: str):
    """Register the fake-quantizer of a number format the schema's vocabulary already names (once)."""

    def deco(fn: FakeQuantizer) -> FakeQuantizer:
        if name not in NUMBER_FORMATS:
            raise RegistryError(f"quantizer for {name!r}: add the format to mpq.schema.NUMBER_FORMATS first "
                                "(register_number_format), so documents and the size convention know it")
        return register(QUANTIZERS, name, fn, kind="quantizer")

    return deco


# ----------------------------------------------------------------------------------------------
# Weight access


def weight_matrix(module: nn.Module) -> torch.Tensor:
    """The weight as ``[out, inputs]`` (a view when possible). transformers' Conv1D stores ``[in, out]``."""
    w = module.weight
    if type(module).__name__ == "Conv1D":
        return w.t()
    return w.reshape(w.shape[0], -1)


def weight_shape(module: nn.Module) -> list[int]:
    """Weight shape with output channels first."""
    w = module.weight
    if type(module).__name__ == "Conv1D":
        return [int(w.shape[1]), int(w.shape[0])]
    return [int(s) for s in w.shape]


def set_weight_matrix(module: nn.Module, w2d: torch.Tensor) -> None:
    w = module.weight
    with torch.no_grad():
        if type(module).__name__ == "Conv1D":
            w.copy_(w2d.t().to(w.dtype))
        else:
            w.copy_(w2d.reshape(w.shape).to(w.dtype))


# ----------------------------------------------------------------------------------------------
# Grouping


def _grouped(w: torch.Tensor, group_size: Optional[int], fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Apply ``fn`` row-wise to groups of ``group_size`` inputs (the last group may be shorter)."""
    out, k = w.shape
    if group_size is None or group_size >= k:
        return fn(w)
    full = (k // group_size) * group_size
    parts = []
    if full:
        head = w[:, :full].reshape(out * (full // group_size), group_size)
        parts.append(fn(head).reshape(out, full))
    if full < k:
        parts.append(fn(w[:, full:]))
    return torch.cat(parts, dim=1)


# ----------------------------------------------------------------------------------------------
# Integer round-to-nearest


def int_levels(bits: int, symmetric: bool) -> tuple[int, int]:
    if symmetric:
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


def _int_scale(w: torch.Tensor, bits: int, symmetric: bool) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Per row of ``w``: the scale and, asymmetric only, the zero point of its integer grid."""
    if symmetric:
        # 2^b levels centred on zero: the largest magnitude lands half a step outside the grid,
        # so every weight is within half a step of a level (as GPTQ's symmetric grid).
        amax = w.abs().amax(dim=1, keepdim=True)
        # multiply by the reciprocal rather than divide: CUDA divides a tensor by a Python scalar that
        # way, so CPU and GPU then agree to the last bit (a 1-ulp scale flips the row's extreme tie)
        scale = amax * (1.0 / (2 ** (bits - 1) - 0.5))
        return torch.where(scale > 0, scale, torch.ones_like(scale)), None
    # the range always contains 0 (as GPTQ's), so zero is exactly representable and a constant row is exact
    lo = w.amin(dim=1, keepdim=True).clamp(max=0)
    hi = w.amax(dim=1, keepdim=True).clamp(min=0)
    scale = (hi - lo) * (1.0 / (2**bits - 1))
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    return scale, torch.round(-lo / scale)


def _int_grid(w: torch.Tensor, bits: int, symmetric: bool) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """Per row of ``w``: the integer codes ``q`` (as floats), the scale and, asymmetric only, the zero point."""
    qmin, qmax = int_levels(bits, symmetric)
    scale, zero = _int_scale(w, bits, symmetric)
    if zero is None:
        return torch.clamp(torch.round(w / scale), qmin, qmax), scale, None
    return torch.clamp(torch.round(w / scale) + zero, qmin, qmax), scale, zero


def _int_rows(w: torch.Tensor, bits: int, symmetric: bool) -> torch.Tensor:
    q, scale, zero = _int_grid(w, bits, symmetric)
    return q * scale if zero is None else (q - zero) * scale


@dataclass(frozen=True)
class IntGrid:
    """An ``int`` option of a weight matrix without its codes: ``scale``/``zero [out, groups]`` and the code range.

    Code that holds many options of a matrix keeps these (a few bytes a row or group, not a byte a weight) and
    rounds the weights on them again where it uses them (:meth:`error`), with :func:`quantize_int`'s
    operations on the same numbers: its values to the bit.
    """

    scale: torch.Tensor
    zero: Optional[torch.Tensor]
    qmin: int
    qmax: int

    def rows(self, start: int, stop: int) -> "IntGrid":
        """Rows ``start:stop`` of the matrix (views, no copy)."""
        zero = None if self.zero is None else self.zero[start:stop]
        return IntGrid(self.scale[start:stop], zero, self.qmin, self.qmax)

    def error(self, w: torch.Tensor, out: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """``fake_quantize(W) - W`` in float32, written into ``out`` (``w``'s shape): ``w`` is the matrix (or the
        rows of :meth:`rows`) in float32, ``dtype`` the model weight's (the quantizer rounds its result to it)."""
        g = out.view(w.shape[0], self.scale.shape[1], -1)
        scale = self.scale.unsqueeze(-1)
        torch.div(w.view(g.shape), scale, out=g)
        g.round_()
        if self.zero is None:
            g.clamp_(self.qmin, self.qmax)
        else:
            zero = self.zero.unsqueeze(-1)
            g.add_(zero).clamp_(self.qmin, self.qmax).sub_(zero)
        g.mul_(scale)
        if dtype != torch.float32:
            out.copy_(out.to(dtype))
        return out.sub_(w)


def int_grid(w: torch.Tensor, spec: QuantSpec) -> Optional[IntGrid]:
    """The :class:`IntGrid` of ``fake_quantize(w, spec)`` for a ``[out, inputs]`` matrix, or None where the option
    is not a plain integer grid of at most 8 bits (another format, pruning) or its groups do not divide the inputs.
    Rows are scaled a slice at a time (they quantize independently), so temporaries stay a few MB."""
    out, k = w.shape
    size = spec.group_size if spec.group_size is not None and spec.group_size < k else k
    if spec.format != "int" or spec.prune_ratio > 0 or spec.w_bits > 8 or k % size:
        return None
    groups, step = k // size, max(1, (1 << 20) // k)
    parts = [_int_scale(w[i : i + step].detach().float().reshape(-1, size), spec.w_bits, spec.symmetric)
             for i in range(0, out, step)]
    scale = torch.cat([p[0] for p in parts]).view(out, groups)
    zero = None if spec.symmetric else torch.cat([p[1] for p in parts]).view(out, groups)
    return IntGrid(scale, zero, *int_levels(spec.w_bits, spec.symmetric))


@register_quantizer("int")
def quantize_int(w: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """Round-to-nearest integer, symmetric or asymmetric, per output channel or per input group."""
    w32 = w.detach().float()
    return _grouped(w32, spec.group_size, lambda rows: _int_rows(rows, spec.w_bits, spec.symmetric)).to(w.dtype)


@register_quantizer("float")
def keep_float(w: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """Kept in 16-bit float: rounds to bfloat16/float16 precision as the stored model would."""
    return w.detach().to(torch.float16).to(w.dtype) if w.dtype == torch.float32 else w.detach().clone()


# ----------------------------------------------------------------------------------------------
# Floating-point element formats with MX-style block scales


@dataclass(frozen=True)
class FloatGrid:
    """A small float element format: ``mantissa_bits``, smallest normal exponent, largest finite value."""

    mantissa_bits: int
    min_exponent: int
    max_value: float

    @property
    def max_exponent(self) -> int:
        """``emax``: the exponent of the largest normal value (OCP MX scales subtract it)."""
        return int(math.floor(math.log2(self.max_value)))

    def round(self, x: torch.Tensor) -> torch.Tensor:
        """Round to the nearest representable value (ties to even), saturating at ``max_value``."""
        mag = x.abs().clamp(max=self.max_value)
        exponent = torch.floor(torch.log2(mag.clamp(min=torch.finfo(mag.dtype).tiny))).clamp(min=self.min_exponent)
        step = torch.exp2(exponent - self.mantissa_bits)
        return torch.sign(x) * torch.clamp(torch.round(mag / step) * step, max=self.max_value)

    def values(self) -> torch.Tensor:
        """Every non-negative representable value (for tests and documentation)."""
        vals = {0.0}
        for e in range(self.min_exponent, int(math.floor(math.log2(self.max_value))) + 1):
            for m in range(2**self.mantissa_bits):
                sub = e == self.min_exponent
                for v in ([m * 2.0 ** (e - self.mantissa_bits)] if sub else []) + [(1 + m / 2**self.mantissa_bits) * 2.0**e]:
                    if v <= self.max_value:
                        vals.add(v)
        return torch.tensor(sorted(vals), dtype=torch.float64)


#: OCP 8-bit (E4M3 "fn": no infinities, max 448; E5M2: max 57344) and 4-bit (E2M1: 0, 0.5 ... 6) formats.
FLOAT_GRIDS = {
    "fp8_e4m3": FloatGrid(3, -6, 448.0),
    "fp8_e5m2": FloatGrid(2, -14, 57344.0),
    "fp4_e2m1": FloatGrid(1, 0, 6.0),
}


def fp_block_scales(blocks: torch.Tensor, grid: FloatGrid) -> torch.Tensor:
    """One power-of-two (E8M0) scale per row, as the OCP MX spec sets it: ``2^(floor(log2 amax) - emax)``.

    ``emax`` is the element format's largest exponent (2 for fp4 e2m1, 8 for fp8 e4m3), so the block's
    largest value lands in the top binade and saturates at ``max_value`` when it is above it; this
    is the scale llm-compressor and torchao's MX ``FLOOR`` mode write, so exported MX scales equal
    the ones mpq measured.
    """
    amax = blocks.abs().amax(dim=1, keepdim=True)
    k = torch.floor(torch.log2(amax.clamp(min=torch.finfo(amax.dtype).tiny))) - grid.max_exponent
    return torch.where(amax > 0, torch.exp2(k), torch.ones_like(amax))


def _fp_rows(rows: torch.Tensor, grid: FloatGrid) -> torch.Tensor:
    scale = fp_block_scales(rows, grid)
    return grid.round(rows / scale) * scale


def _register_float(name: str, grid: FloatGrid) -> None:
    @register_quantizer(name)
    def quantize_float(w: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
        w32 = w.detach().float()
        return _grouped(w32, fp_block(spec), lambda rows: _fp_rows(rows, grid)).to(w.dtype)

    quantize_float.__doc__ = f"{name} elements with one power-of-two scale per block of ``group_size`` inputs (default 32)."


for _name, _grid in FLOAT_GRIDS.items():
    _register_float(_name, _grid)


#: NVFP4's two-level scale: the fp32 tensor scale maps the tensor's amax to fp4 max x fp8 e4m3 max.
NVFP4_TENSOR_RANGE = FLOAT_GRIDS["fp4_e2m1"].max_value * FLOAT_GRIDS["fp8_e4m3"].max_value


@register_quantizer("nvfp4")
def quantize_nvfp4(w: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """NVFP4: fp4 e2m1 elements, an fp8 e4m3 scale per 16 elements and one fp32 scale per tensor.

    As compressed-tensors computes it: the global scale is ``6 * 448 / amax``; each block's scale is
    ``amax_block / 6`` times the global scale, rounded to fp8 e4m3, and divided by it again.
    """
    fp4, fp8 = FLOAT_GRIDS["fp4_e2m1"], FLOAT_GRIDS["fp8_e4m3"]
    w32 = w.detach().float()
    amax = w32.abs().max()
    global_scale = NVFP4_TENSOR_RANGE / amax if amax > 0 else torch.ones((), dtype=w32.dtype)  # 1 / the tensor scale

    def rows(x: torch.Tensor) -> torch.Tensor:
        block = fp8.round(x.abs().amax(dim=1, keepdim=True) / fp4.max_value * global_scale)
        block = torch.where(block > 0, block, torch.ones_like(block)) / global_scale
        return fp4.round(x / block) * block

    return _grouped(w32, fp_block(spec), rows).to(w.dtype)


# ----------------------------------------------------------------------------------------------
# Pruning


def prune_mask(w: torch.Tensor, ratio: float, structure: str = "unstructured") -> torch.Tensor:
    """Boolean keep-mask by magnitude: ``ratio`` of the smallest weights, or 2 of every 4 along inputs."""
    if ratio <= 0:
        return torch.ones_like(w, dtype=torch.bool)
    if structure == "2:4":
        out, k = w.shape
        pad = (-k) % 4
        a = torch.nn.functional.pad(w.abs(), (0, pad), value=float("inf")).reshape(out, -1, 4)
        idx = a.argsort(dim=2)[..., :2]
        keep = torch.ones_like(a, dtype=torch.bool).scatter_(2, idx, False)
        return keep.reshape(out, -1)[:, :k]
    n_prune = int(math.floor(w.numel() * ratio + 1e-9))
    if n_prune == 0:
        return torch.ones_like(w, dtype=torch.bool)
    flat = w.abs().flatten()
    idx = torch.argsort(flat, stable=True)[:n_prune]
    keep = torch.ones_like(flat, dtype=torch.bool)
    keep[idx] = False
    return keep.reshape(w.shape)


def fake_quantize(w: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """Prune (if asked) then quantize the kept weights; pruned weights stay exactly zero."""
    try:
        quantizer = QUANTIZERS[spec.format]
    except KeyError:
        raise ValueError(f"weight format {spec.format!r} has no quantizer; known: {sorted(QUANTIZERS)}") from None
    if spec.prune_ratio > 0:
        keep = prune_mask(w, spec.prune_ratio, spec.prune_structure)
        wq = quantizer(torch.where(keep, w, torch.zeros_like(w)), spec)
        return torch.where(keep, wq, torch.zeros_like(wq))
    return quantizer(w, spec)


def quantization_error(w: torch.Tensor, spec: QuantSpec) -> float:
    """``||Q(W) - W||^2`` summed over the weight, in float64."""
    with torch.no_grad():
        return float(((fake_quantize(w, spec).double() - w.double()) ** 2).sum())


def fp_block(spec: QuantSpec) -> int:
    """Inputs per scale of a block-scaled format: the group size, or the format's default block."""
    return spec.group_size or NUMBER_FORMATS[spec.format].default_block
