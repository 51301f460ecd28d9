"""apply_plan's activation fake-quantization: calibrated ranges, 2^a levels, removable hooks."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from mpq.activations import remove_activation_quant
from mpq.apply import apply_plan
from mpq.errors import WorkloadError
from mpq.graph import discover
from mpq.quant import QuantSpec

from tests.helpers.plans import plan_from_specs


def _model_and_batches():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 4))
    batches = [(torch.randn(8, 12), None) for _ in range(3)]
    return model, batches


def _inputs_of(module, model, x):
    seen = []
    h = module.register_forward_pre_hook(lambda m, a: seen.append(a[0].detach().clone()))
    with torch.no_grad():
        model(x)
    h.remove()
    return seen[0]


def test_activation_bits_quantize_layer_inputs_to_calibrated_levels_and_hooks_come_off():
    model, batches = _model_and_batches()
    plan = plan_from_specs(discover(model), {"0": QuantSpec(8, None, a_bits=4), "2": QuantSpec(8, None)})
    apply_plan(model, plan, batches=batches)
    hooks = model._mpq_activation_hooks
    assert set(hooks.quantizers) == {"0"}
    q = hooks.quantizers["0"]
    lo = min(float(b[0].min()) for b in batches)
    hi = max(float(b[0].max()) for b in batches)
    assert (q.lo, q.hi) == pytest.approx((lo, hi))
    x = batches[0][0]
    # the hook runs before the layer: capture what the layer receives by hooking after ours
    seen = []
    h = model[0].register_forward_pre_hook(lambda m, a: seen.append(a[0]))
    with torch.no_grad():
        quantized_out = model(x)
    h.remove()
    assert len(torch.unique(seen[0])) <= 2**4
    remove_activation_quant(model)
    with torch.no_grad():
        assert not torch.equal(model(x), quantized_out)
    assert torch.equal(_inputs_of(model[0], model, x), x)


def test_activation_bits_without_calibration_batches_are_refused():
    model, _ = _model_and_batches()
    plan = plan_from_specs(discover(model), {"0": QuantSpec(8, None, a_bits=8)})
    with pytest.raises(WorkloadError, match="a_bits=8"):
        apply_plan(model, plan)


def test_apply_of_a_copy_leaves_the_original_model_and_its_hooks_alone():
    model, batches = _model_and_batches()
    before = model[0].weight.detach().clone()
    plan = plan_from_specs(discover(model), {"0": QuantSpec(2, None, a_bits=8)})
    copy = apply_plan(model, plan, inplace=False, batches=batches)
    assert torch.equal(model[0].weight, before) and not model[0]._forward_pre_hooks
    assert copy[0]._forward_pre_hooks and len(torch.unique(copy[0].weight[0])) <= 4
