"""mpq's MX and NVFP4 quantizers against the libraries that write those checkpoints, so exported scales
and values are the ones mpq measured."""
from __future__ import annotations

import pytest
import torch

from mpq.quant import FLOAT_GRIDS, QuantSpec, fake_quantize, fp_block_scales
from mpq.sizes import weight_bits


def _weights(seed: int) -> torch.Tensor:
    torch.manual_seed(seed)
    return torch.randn(8, 128) * torch.logspace(-3, 2, 128)


@pytest.mark.parametrize("fmt", ["fp4_e2m1", "fp8_e4m3"])
def test_mx_block_scales_are_the_ocp_floor_scales_torchao_writes(fmt):
    mx = pytest.importorskip("torchao.prototype.mx_formats.mx_tensor")
    from torchao.prototype.mx_formats.config import ScaleCalculationMode

    elem = {"fp4_e2m1": getattr(torch, "float4_e2m1fn_x2", None), "fp8_e4m3": torch.float8_e4m3fn}[fmt]
    if elem is None:
        pytest.skip("this torch has no float4 dtype")
    for seed in range(3):
        w = _weights(seed)
        scale_e8m0, _ = mx.to_mx(w, elem, 32, ScaleCalculationMode.FLOOR)[:2]
        theirs = torch.exp2(scale_e8m0.view(torch.uint8).float().flatten() - 127)
        ours = fp_block_scales(w.reshape(-1, 32), FLOAT_GRIDS[fmt]).flatten()
        assert torch.equal(theirs, ours)


def test_mx_scale_rounds_the_exponent_down_and_saturates_the_block_max():
    grid = FLOAT_GRIDS["fp4_e2m1"]
    block = torch.tensor([[7.0, 1.0, -0.5]])  # floor(log2 7) - emax(2) = 0: scale 1, 7 saturates at 6
    assert fp_block_scales(block, grid).item() == 1.0
    assert fake_quantize(block, QuantSpec(4, 3, "fp4_e2m1")).tolist() == [[6.0, 1.0, -0.5]]


def test_nvfp4_equals_compressed_tensors_fake_quantization():
    pytest.importorskip("compressed_tensors")
    from compressed_tensors.quantization import QuantizationArgs
    from compressed_tensors.quantization.lifecycle.forward import fake_quantize as ct_fake_quantize
    from compressed_tensors.quantization.utils.helpers import calculate_qparams, generate_gparam

    args = QuantizationArgs(num_bits=4, type="float", symmetric=True, group_size=16, strategy="tensor_group",
                            scale_dtype=torch.float8_e4m3fn)
    for seed in range(3):
        w = _weights(seed)
        global_scale = generate_gparam(w.min(), w.max())
        blocks = w.reshape(w.shape[0], -1, 16)
        scale, zero = calculate_qparams(blocks.amin(-1), blocks.amax(-1), args, global_scale=global_scale)
        assert torch.equal(ct_fake_quantize(w, scale, zero, args, global_scale=global_scale), fake_quantize(w, QuantSpec(4, None, "nvfp4")))


def test_nvfp4_counts_fp4_elements_an_fp8_scale_per_16_and_an_fp32_tensor_scale():
    assert weight_bits([8, 128], 4, None, "nvfp4") == 8 * 128 * 4 + 8 * 8 * (128 // 16) + 32
