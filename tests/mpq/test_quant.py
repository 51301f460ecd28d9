import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mpq.quant import QuantSpec, fake_quantize, quantization_error, prune_mask
from mpq.sizes import to_bytes, weight_bits


def _levels_per_row(wq, group_size):
    out, k = wq.shape
    g = group_size or k
    counts = []
    for start in range(0, k, g):
        block = wq[:, start:start + g]
        counts += [len(torch.unique(row)) for row in block]
    return counts


@settings(max_examples=40, deadline=None)
@given(
    bits=st.integers(2, 8),
    group=st.sampled_from([None, 4, 5, 16]),
    symmetric=st.booleans(),
    out=st.integers(1, 6),
    k=st.integers(1, 40),
    seed=st.integers(0, 10_000),
)
def test_at_most_2_to_the_b_levels_and_error_within_half_a_step(bits, group, symmetric, out, k, seed):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(out, k, generator=g) * torch.rand(out, 1, generator=g) * 3
    wq = fake_quantize(w, QuantSpec(bits, group, "int", symmetric))
    assert max(_levels_per_row(wq, group)) <= 2**bits
    # every weight lies within half a step of its level, the step being that row's (group's) scale
    gs = group or k
    for start in range(0, k, gs):
        blk, qblk = w[:, start:start + gs], wq[:, start:start + gs]
        if symmetric:
            step = blk.abs().amax(1, keepdim=True) / (2 ** (bits - 1) - 0.5)
        else:
            step = (blk.amax(1, keepdim=True).clamp(min=0) - blk.amin(1, keepdim=True).clamp(max=0)) / (2**bits - 1)
        assert torch.all((qblk - blk).abs() <= step / 2 + 1e-5)


def test_more_bits_never_increase_the_error_much_and_16_bit_is_near_lossless():
    w = torch.randn(32, 64, generator=torch.Generator().manual_seed(0))
    errs = [quantization_error(w, QuantSpec(b)) for b in (2, 3, 4, 6, 8)]
    assert all(a > b for a, b in zip(errs, errs[1:]))
    assert quantization_error(w, QuantSpec(16, format="float")) < 1e-4 * errs[-1] * 1e3


def test_zero_rows_stay_zero():
    w = torch.zeros(3, 8)
    assert torch.equal(fake_quantize(w, QuantSpec(3)), w)
    assert torch.equal(fake_quantize(w, QuantSpec(3, symmetric=False)), w)


def test_pruning_keeps_the_planned_fraction_and_largest_weights():
    w = torch.arange(1, 101, dtype=torch.float32).reshape(10, 10)
    keep = prune_mask(w, 0.3)
    assert int((~keep).sum()) == 30 and torch.all(w[~keep] <= 30)
    wq = fake_quantize(w, QuantSpec(8, prune_ratio=0.3))
    assert int((wq == 0).sum()) == 30


def test_two_of_four_pruning_keeps_two_per_block():
    w = torch.randn(4, 16, generator=torch.Generator().manual_seed(1))
    keep = prune_mask(w, 0.5, "2:4")
    assert torch.all(keep.reshape(4, 4, 4).sum(-1) == 2)


@pytest.mark.parametrize(
    "shape,bits,group,sym,prune,expected",
    [
        ([16, 1, 3, 3], 4, None, True, 0.0, 144 * 4 + 16 * 16),  # per channel: one 16-bit scale per output
        ([64, 512], 3, 128, True, 0.0, 64 * 512 * 3 + 64 * 4 * 16),  # per group of 128 inputs
        ([64, 100], 4, 32, False, 0.0, 6400 * 4 + 64 * 4 * (16 + 4)),  # 100/32 -> 4 groups, asym adds a zero-point
        ([10, 10], 8, None, True, 0.5, 50 * 8 + 100 + 10 * 16),  # pruned: kept weights + 1-bit mask
        ([10, 64], 16, None, True, 0.0, 640 * 16),  # float: 16 bits per weight, no scales
    ],
)
def test_size_convention(shape, bits, group, sym, prune, expected):
    fmt = "float" if bits == 16 else "int"
    assert weight_bits(shape, bits, group, fmt, sym, prune) == expected
    assert to_bytes(expected) == math.ceil(expected / 8)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("spec", [QuantSpec(2), QuantSpec(4, 16), QuantSpec(8), QuantSpec(3, None, "int", False),
                                  QuantSpec(8, 32, "fp8_e4m3"), QuantSpec(4, 32, "fp4_e2m1"), QuantSpec(4, prune_ratio=0.5)])
def test_cpu_and_cuda_quantize_to_the_same_values(spec):
    w = torch.randn(64, 96, generator=torch.Generator().manual_seed(3))
    assert torch.equal(fake_quantize(w, spec), fake_quantize(w.cuda(), spec).cpu())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("bits,group,symmetric", [(4, None, True), (3, 16, True), (8, 32, False), (2, None, False), (8, 512, True)])
def test_int_grids_round_to_the_quantizers_values_bit_for_bit(bits, group, symmetric, dtype):
    from mpq.quant import int_grid

    w = torch.randn(24, 64, generator=torch.Generator().manual_seed(bits)).to(dtype)
    spec = QuantSpec(bits, group, "int", symmetric)
    grid = int_grid(w, spec)
    assert (grid.zero is None) == symmetric
    expected = fake_quantize(w, spec).float() - w.float()
    assert torch.equal(grid.error(w.float(), torch.empty(24, 64), dtype), expected)
    assert torch.equal(grid.rows(5, 17).error(w[5:17].float(), torch.empty(12, 64), dtype), expected[5:17])


def test_int_grids_are_only_given_for_plain_integer_grids_that_divide_the_row():
    from mpq.quant import int_grid

    w = torch.randn(8, 48)
    assert int_grid(w, QuantSpec(4, 32, "int")) is None  # 48 inputs are not whole groups of 32
    assert int_grid(w, QuantSpec(4, None, "int", True, 0.5)) is None  # pruned
    assert int_grid(w, QuantSpec(8, None, "fp8_e4m3")) is None
