"""The size convention, in one place (every size in a problem, plan or export follows it): weight bits, bytes, BitOps and average bits of an option.

Pure Python (no torch), so plans can be recounted anywhere. What each number format costs (its
scale bits, default block, zero-points) is in its :data:`mpq.schema.NUMBER_FORMATS` entry.
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

from .registry import register
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
        bits += n * spec.scale_bits + spec.tensor_scale_bits
        if spec.zero_point and not symmetric:
            bits += n * w_bits
    return bits


def to_bytes(bits: int) -> int:
    return -(-int(bits) // 8)


def bitops(macs: int, w_bits: int, a_bits: Optional[int], prune_ratio: float = 0.0) -> int:
    """MACs x weight bits x activation bits; activations without a_bits count as 16-bit, pruned MACs are skipped."""
    a = 16 if a_bits is None else a_bits
    return int(round(macs * (1.0 - prune_ratio))) * w_bits * a


# ----------------------------------------------------------------------------------------------
# Target accounting: the bits a quantizer's own checkpoint stores for one layer (``mpq plan --target``).
# Each function takes the weight shape (output first) and the option's fields and returns the exact
# storage bits of the tensors that tool writes for that weight, or None when it cannot store it.
# A layer kept in ``float`` is 16 bits per weight everywhere.

SizeFn = Callable[..., Optional[int]]
TARGET_SIZES: dict[str, SizeFn] = {}


def target_size(name: str):
    """Register a target accounting under ``name`` (its docstring's first line says what it counts)."""

    def deco(fn: SizeFn) -> SizeFn:
        return register(TARGET_SIZES, name, fn, kind="target size")

    return deco


def _words(values: int, bits: int, word: int = 32) -> int:
    """Bits of ``values`` packed ``bits`` each into whole ``word``-bit words."""
    return math.ceil(values * bits / word) * word


def _groups(k: int, group_size: Optional[int]) -> int:
    return 1 if group_size is None else math.ceil(k / group_size)


@target_size("mpq")
def mpq_bits(shape, w_bits, group_size=None, fmt="int", symmetric=True, a_bits=None, embedding=False) -> Optional[int]:
    """mpq's default convention: w_bits per weight + a 16-bit scale per channel or group (+ w_bits zero-point when asymmetric)."""
    return weight_bits(shape, w_bits, group_size, fmt, symmetric)


@target_size("gptq")
def gptq_bits(shape, w_bits, group_size=None, fmt="int", symmetric=True, a_bits=None, embedding=False) -> Optional[int]:
    """GPTQ checkpoint: qweight int32 [k*b/32, out], qzeros int32 [groups, out*b/32] (even when symmetric), scales fp16 [groups, out], g_idx int32 [k]."""
    out, k = out_and_in(shape)
    if fmt == "float":
        return 16 * out * k
    if fmt != "int":
        return None
    g = _groups(k, group_size)
    return out * _words(k, w_bits) + g * _words(out, w_bits) + 16 * g * out + 32 * k


@target_size("autoround")
def autoround_bits(shape, w_bits, group_size=None, fmt="int", symmetric=True, a_bits=None, embedding=False) -> Optional[int]:
    """AutoRound's packed QuantLinear: qweight int32 [k*b/32, out], qzeros int32 [groups, out*b/32] (even when symmetric), scales fp16 [groups, out]."""
    out, k = out_and_in(shape)
    if fmt == "float":
        return 16 * out * k
    if fmt != "int":
        return None
    g = _groups(k, group_size)
    return out * _words(k, w_bits) + g * _words(out, w_bits) + 16 * g * out


#: compressed-tensors stores each quantized weight's shape as an int64 [2] tensor in pack-quantized form.
CT_SHAPE_BITS = 2 * 64


@target_size("compressed-tensors")
def compressed_tensors_bits(shape, w_bits, group_size=None, fmt="int", symmetric=True, a_bits=None, embedding=False) -> Optional[int]:
    """compressed-tensors as llm-compressor saves it: pack-quantized int32 words + 16-bit scales (+ packed zero-points, + int64 shape); int8 W8A8 unpacked; fp8 per channel; MXFP4/MXFP8 with uint8 scales per 32; NVFP4 with fp8 scales per 16 and an fp32 tensor scale."""
    out, k = out_and_in(shape)
    n = out * k
    if fmt == "float":
        return 16 * n
    if fmt == "int":
        g = _groups(k, group_size)
        if a_bits is not None:  # static per-tensor activations: a 16-bit input scale and an int8 input zero-point
            act = 16 + 8
            if w_bits == 8:  # int-quantized: int8 weight, scale (and int8 zero-point)
                return 8 * n + 16 * g * out + (0 if symmetric else 8 * g * out) + act
            zero = 0 if symmetric else g * _words(out, w_bits)
            return out * _words(k, w_bits) + 16 * g * out + zero + CT_SHAPE_BITS + act
        zero = 0 if symmetric else g * _words(out, w_bits)  # packed along the output dimension
        return out * _words(k, w_bits) + 16 * g * out + zero + CT_SHAPE_BITS
    if fmt == "fp8_e4m3":
        if group_size == k:  # FP8 per channel: fp8 weight + 16-bit scale per output channel
            return 8 * n + 16 * out
        return 8 * n + 8 * out * math.ceil(k / 32)  # MXFP8
    if fmt == "fp4_e2m1":
        return 4 * n + 8 * out * math.ceil(k / 32)  # MXFP4: uint8 [out, k/2] + uint8 E8M0 scales
    if fmt == "nvfp4":
        return 4 * n + 8 * out * math.ceil(k / 16) + 32
    return None


def hqq_packed_bits(rows: int, cols: int, w_bits: int) -> int:
    """HQQ's W_q: 8, 6 and 5 bits take a byte; 4, 2 and 1 bits pack 2, 4 and 8 rows per byte; 3 bits pack 10 rows per int32."""
    if w_bits in (5, 6, 8):
        return 8 * rows * cols
    if w_bits == 3:
        return 32 * math.ceil(rows / 10) * cols
    per_byte = {4: 2, 2: 4, 1: 8}[w_bits]
    return 8 * math.ceil(rows / per_byte) * cols


@target_size("hqq")
def hqq_bits(shape, w_bits, group_size=None, fmt="int", symmetric=True, a_bits=None, embedding=False) -> Optional[int]:
    """HQQ: the weight as [numel/group, group] packed along rows (see hqq_packed_bits) + an fp16 scale and fp16 zero per group, symmetric or not."""
    out, k = out_and_in(shape)
    if fmt == "float":
        return 16 * out * k
    if fmt != "int" or w_bits not in (1, 2, 3, 4, 5, 6, 8):
        return None
    g = group_size or k
    rows = out * k // g
    return hqq_packed_bits(rows, g, w_bits) + 32 * rows


#: ggml type -> (block size in elements, bytes per block), as gguf's GGML_QUANT_SIZES.
GGML_TYPES = {
    "q2_K": (256, 84), "q3_K": (256, 110), "q4_K": (256, 144), "q5_K": (256, 176), "q6_K": (256, 210),
    "q4_0": (32, 18), "q4_1": (32, 20), "q5_0": (32, 22), "q5_1": (32, 24), "q8_0": (32, 34),
    "mxfp4": (32, 17), "f16": (1, 2),
}
K_QUANT = {2: "q2_K", 3: "q3_K", 4: "q4_K", 5: "q5_K", 6: "q6_K", 8: "q8_0"}
LEGACY = {(4, True): "q4_0", (4, False): "q4_1", (5, True): "q5_0", (5, False): "q5_1", (8, True): "q8_0", (8, False): "q8_0"}


def ggml_type_for(k: int, w_bits: int, fmt: str, symmetric: bool = True) -> Optional[str]:
    """The ggml type llama.cpp stores a row of ``k`` inputs in: k-quants when k is a multiple of 256, else 32-blocks."""
    if fmt == "float":
        return "f16"
    if fmt == "fp4_e2m1":
        return "mxfp4" if k % 32 == 0 else None
    if fmt != "int":
        return None
    if k % 256 == 0 and w_bits in K_QUANT:
        return K_QUANT[w_bits]
    if k % 32 == 0:
        return LEGACY.get((w_bits, symmetric))
    return None


def ggml_bits_per_weight(ggml_type: str) -> float:
    block, size = GGML_TYPES[ggml_type]
    return size * 8 / block


@target_size("ggml")
def ggml_bits(shape, w_bits, group_size=None, fmt="int", symmetric=True, a_bits=None, embedding=False) -> Optional[int]:
    """llama.cpp GGUF: rows of ggml blocks, each block's bytes as GGML_QUANT_SIZES (k-quant super-block scales included)."""
    out, k = out_and_in(shape)
    t = ggml_type_for(k, w_bits, fmt, symmetric)
    if t is None:
        return None
    block, size = GGML_TYPES[t]
    return out * math.ceil(k / block) * size * 8


#: Group sizes torchao's packed Int4WeightOnlyConfig takes.
TORCHAO_INT4_GROUPS = frozenset({32, 64, 128, 256})


def torchao_layout(w_bits: int, group_size: Optional[int], fmt: str, a_bits: Optional[int], k: int, embedding: bool = False,
                   symmetric: bool = True) -> Optional[str]:
    """The torchao config (and so tensor layout) a layer is exported with; None for float, "" when none fits.

    Embeddings always take ``IntxWeightOnlyConfig`` (the one weight-only config with an embedding path).
    """
    if fmt == "float":
        return None
    if embedding:
        return "IntxWeightOnlyConfig" if fmt == "int" and a_bits is None else ""
    if fmt == "fp8_e4m3":
        return "Float8WeightOnlyConfig" if group_size in (None, k) and a_bits is None else ""
    if fmt != "int":
        return ""
    if a_bits == 8:
        return "Int8DynamicActivationIntxWeightConfig"
    if a_bits is not None:
        return ""
    if w_bits == 4 and group_size in TORCHAO_INT4_GROUPS and k % group_size == 0:
        return "Int4WeightOnlyConfig"
    if w_bits == 8 and symmetric:
        return "Int8WeightOnlyConfig"
    return "IntxWeightOnlyConfig"


@target_size("torchao")
def torchao_bits(shape, w_bits, group_size=None, fmt="int", symmetric=True, a_bits=None, embedding=False) -> Optional[int]:
    """torchao after quantize_ on a bf16 model: Int4 packed 2 per byte + bf16 scale and zero per group; Int8 int8 + fp32 scale + int8 zero per row/group; Float8 fp8 + fp32 scale per row; other bits int8-unpacked + bf16 scale + int8 zero per group."""
    out, k = out_and_in(shape)
    n = out * k
    layout = torchao_layout(w_bits, group_size, fmt, a_bits, k, embedding, symmetric)
    if layout is None:
        return 16 * n
    g = _groups(k, group_size)
    if layout == "Int4WeightOnlyConfig":
        return 4 * n + 2 * 16 * g * out
    if layout == "Int8WeightOnlyConfig":
        return 8 * n + (32 + 8) * g * out
    if layout == "Float8WeightOnlyConfig":
        return 8 * n + 32 * out
    if layout in ("IntxWeightOnlyConfig", "Int8DynamicActivationIntxWeightConfig"):
        return 8 * n + (16 + 8) * g * out
    return None


@target_size("modelopt")
def modelopt_bits(shape, w_bits, group_size=None, fmt="int", symmetric=True, a_bits=None, embedding=False) -> Optional[int]:
    """ModelOpt's exported checkpoint: int4 packed 2 per byte / int8 + an fp16 scale per block or channel; fp8 + an fp32 scale per channel; NVFP4 packed + fp8 scale per 16 + fp32 tensor scale."""
    out, k = out_and_in(shape)
    n = out * k
    if fmt == "float":
        return 16 * n
    if fmt == "int" and w_bits in (4, 8) and symmetric:
        return w_bits * n + 16 * _groups(k, group_size) * out
    if fmt == "fp8_e4m3" and group_size in (None, k):
        return 8 * n + 32 * out
    if fmt == "nvfp4":
        return 4 * n + 8 * out * math.ceil(k / 16) + 32
    return None


@target_size("openvino")
def openvino_bits(shape, w_bits, group_size=None, fmt="int", symmetric=True, a_bits=None, embedding=False) -> Optional[int]:
    """OpenVINO IR after NNCF compress_weights: u4/i4 or u8/i8 weights + an fp16 scale per group or channel (+ a u4/u8 zero-point when asymmetric)."""
    out, k = out_and_in(shape)
    n = out * k
    if fmt == "float":
        return 16 * n
    if fmt != "int" or w_bits not in (4, 8):
        return None
    g = _groups(k, group_size)
    return w_bits * n + 16 * g * out + (0 if symmetric else w_bits * g * out)
