"""The size convention, in one place (every size in a problem, plan or export follows it): weight bits, bytes, BitOps and average bits of an option.

Pure Python (no torch), so plans can be recounted anywhere. What each number format costs (its
scale bits, default block, zero-points) is in its :data:`mpq.schema.NUMBER_FORMATS` entry.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

from .schema import NUMBER_FORMATS, NumberFormat

#: Block size of float formats when no group size is given (MX uses 32 for fp8 and fp4).
FP_DEFAULT_BLOCK = NUMBER_FORMATS["fp8_e4m3"].default_block


def number_format(fmt: str) -> NumberFormat:
    try:
        return NUMBER_FORMATS[fmt]
    except KeyError:
        raise ValueError(f"unknown weight format {fmt!r}; expected one of {list(NUMBER_FORMATS)}") from None


def out_and_in(shape: Sequence[int]) -> tuple[int, int]:
    """Output channels and input elements per output channel of a weight of ``shape`` (output first)."""
    out = int(shape[0])
    k = int(math.prod(shape[1:])) if len(shape) > 1 else 1
    return out, k


def num_scales(shape: Sequence[int], group_size: Optional[int], fmt: str = "int") -> int:
    """Scales stored for a weight: one per output channel, or one per group of ``group_size`` inputs."""
    spec = number_format(fmt)
    if not spec.scale_bits:
        return 0
    out, k = out_and_in(shape)
    g = group_size if group_size is not None else spec.default_block
    if g is None:
        return out
    return out * math.ceil(k / g)


def weight_bits(
    shape: Sequence[int],
    w_bits: int,
    group_size: Optional[int] = None,
    fmt: str = "int",
    symmetric: bool = True,
    prune_ratio: float = 0.0,
    include_scales: bool = True,
) -> int:
    """Exact storage bits of one layer's weight under the size convention of this module.

    kept weights x w_bits, plus one scale per channel or group (16 bits for int, 8 for fp block
    scales), plus one w_bits zero-point per scale when asymmetric, plus a 1-bit mask per original
    weight when pruned. A layer kept in float costs 16 bits per weight.
    """
    params = int(math.prod(shape))
    if fmt == "float":
        return 16 * params
    kept = params - int(math.floor(params * prune_ratio + 1e-9))
    bits = kept * w_bits
    if prune_ratio > 0:
        bits += params
    if include_scales:
        spec = number_format(fmt)
        n = num_scales(shape, group_size, fmt)
        bits += n * spec.scale_bits
        if spec.zero_point and not symmetric:
            bits += n * w_bits
    return bits


def to_bytes(bits: int) -> int:
    return -(-int(bits) // 8)


def bitops(macs: int, w_bits: int, a_bits: Optional[int], prune_ratio: float = 0.0) -> int:
    """MACs x weight bits x activation bits; activations without a_bits count as 16-bit, pruned MACs are skipped."""
    a = 16 if a_bits is None else a_bits
    return int(round(macs * (1.0 - prune_ratio))) * w_bits * a
