"""Number formats, pruning and their sizes: what apply writes into the weights, and what the plan counts."""
from __future__ import annotations

import math

import pytest
import torch

from mpq.cost import CandidateSet, option_id
from mpq.quant import FLOAT_GRIDS, QuantSpec, fake_quantize, fp_block_scales, prune_mask
from mpq.sizes import FP_DEFAULT_BLOCK, weight_bits


def _rows(w: torch.Tensor, group: int | None) -> list[torch.Tensor]:
    if group is None:
        return list(w)
    return [r[i : i + group] for r in w for i in range(0, w.shape[1], group)]


@pytest.mark.parametrize("name,dtype", [("fp8_e4m3", torch.float8_e4m3fn), ("fp8_e5m2", torch.float8_e5m2)])
def test_fp8_grid_rounds_exactly_like_torch_float8(name, dtype):
    grid = FLOAT_GRIDS[name]
    every = torch.arange(256, dtype=torch.int32).to(torch.uint8).view(dtype).double()
    every = every[torch.isfinite(every) & (every >= 0)].unique()
    assert torch.equal(grid.values(), every)
    x = (torch.randn(20000) * torch.logspace(-6, 4, 20000)).clamp(-grid.max_value, grid.max_value)
    assert torch.equal(grid.round(x), x.to(dtype).float())


def test_fp4_e2m1_has_the_ocp_values():
    assert FLOAT_GRIDS["fp4_e2m1"].values().tolist() == [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]


@pytest.mark.parametrize("fmt", ["fp8_e4m3", "fp8_e5m2", "fp4_e2m1"])
@pytest.mark.parametrize("group", [None, 16])
def test_float_formats_hit_only_representable_values_with_power_of_two_block_scales(fmt, group):
    torch.manual_seed(0)
    grid = FLOAT_GRIDS[fmt]
    w = torch.randn(6, 70) * torch.logspace(-3, 1, 70)  # 70 inputs: the last block is short
    q = fake_quantize(w, QuantSpec(8 if fmt.startswith("fp8") else 4, group, fmt))
    block = group or FP_DEFAULT_BLOCK
    allowed = set(grid.values().tolist())
    for orig, got in zip(_rows(w, block), _rows(q, block)):
        scale = fp_block_scales(orig.unsqueeze(0), grid).item()
        assert math.log2(scale) == round(math.log2(scale))  # E8M0: a power of two
        assert {abs(v) for v in (got / scale).tolist()} <= allowed
        assert (got - orig).abs().max() <= orig.abs().max() / 2 ** grid.mantissa_bits + 1e-12


@pytest.mark.parametrize("bits,group,sym", [(2, None, True), (3, 32, True), (4, 16, False), (8, None, False)])
def test_integer_rows_and_groups_take_at_most_two_to_the_bits_values(bits, group, sym):
    torch.manual_seed(1)
    w = torch.randn(8, 96)
    q = fake_quantize(w, QuantSpec(bits, group, "int", sym))
    for row in _rows(q, group):
        assert len(torch.unique(row)) <= 2**bits


@pytest.mark.parametrize("ratio", [0.25, 0.5, 0.9])
def test_unstructured_pruning_zeroes_exactly_the_planned_ratio_of_smallest_weights(ratio):
    torch.manual_seed(2)
    w = torch.randn(16, 50)
    q = fake_quantize(w, QuantSpec(4, None, "int", True, ratio))
    zeros = int((q == 0).sum())
    planned = math.floor(w.numel() * ratio)
    keep = prune_mask(w, ratio)
    assert int((~keep).sum()) == planned and zeros >= planned
    assert w.abs()[~keep].max() <= w.abs()[keep].min()


def test_two_four_pruning_keeps_two_largest_of_every_four_then_quantizes():
    torch.manual_seed(3)
    w = torch.randn(8, 64)
    q = fake_quantize(w, QuantSpec(8, None, "int", True, 0.5, "2:4"))
    blocks = q.reshape(8, 16, 4)
    assert ((blocks != 0).sum(dim=2) <= 2).all()
    kept = prune_mask(w, 0.5, "2:4").reshape(8, 16, 4)
    assert (kept.sum(dim=2) == 2).all()
    assert torch.equal(q == 0, ~prune_mask(w, 0.5, "2:4") | (q == 0))


@pytest.mark.parametrize("fmt", ["fp8_e4m3", "fp4_e2m1"])
def test_pruning_combines_with_float_formats(fmt):
    torch.manual_seed(4)
    w = torch.randn(4, 64)
    bits = 8 if fmt.startswith("fp8") else 4
    q = fake_quantize(w, QuantSpec(bits, None, fmt, True, 0.5))
    assert int((q == 0).sum()) >= w.numel() // 2


def test_sizes_follow_design_for_every_option_type():
    shape = [64, 100]  # 6400 weights, 100 inputs per row
    n = 6400
    assert weight_bits(shape, 4) == n * 4 + 64 * 16  # per channel: one 16-bit scale a row
    assert weight_bits(shape, 4, 32) == n * 4 + 64 * 4 * 16  # ceil(100/32) = 4 groups a row
    assert weight_bits(shape, 3, 32, symmetric=False) == n * 3 + 64 * 4 * (16 + 3)  # plus a 3-bit zero point per scale
    assert weight_bits(shape, 4, None, prune_ratio=0.5) == 3200 * 4 + n + 64 * 16  # kept weights, 1-bit mask, scales
    assert weight_bits(shape, 8, None, "fp8_e4m3") == n * 8 + 64 * 4 * 8  # 8-bit block scales, default block 32
    assert weight_bits(shape, 4, 16, "fp4_e2m1") == n * 4 + 64 * 7 * 8
    assert weight_bits(shape, 16, None, "float") == n * 16
    assert weight_bits(shape, 4, 32, include_scales=False) == n * 4


def test_candidate_grid_has_formats_pruning_and_activation_bits():
    specs = CandidateSet(bits=(4, 8, 16), group_sizes=(None, 32), formats=("int", "fp"), prune=(0.0, 0.5, "2:4"), a_bits=(None, 8)).specs()
    assert {"int4", "int4-g32", "int8-2:4", "int4-p50", "fp4_e2m1", "fp8_e4m3-g32", "fp16", "int4-a8", "fp8_e4m3-2:4-a8"} <= set(specs)
    assert specs["int8-2:4"].prune_structure == "2:4" and specs["int8-2:4"].prune_ratio == 0.5
    assert all(option_id(s) == k for k, s in specs.items())
