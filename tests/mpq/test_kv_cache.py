"""KV-cache bits as planned entries: measured sensitivity, memory per token in the bytes budget, exports."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from mpq.apply import apply_plan
from mpq.errors import DocumentError, ExportError
from mpq.export import get_exporter
from mpq.kv_cache import find_kv_layers, kv_problem_layer, measure_kv_sensitivity
from mpq.pipeline import plan_model
from mpq.workload import Workload



class Attention(nn.Module):
    def __init__(self, d=16, kv=8):
        super().__init__()
        self.q_proj, self.k_proj, self.v_proj = nn.Linear(d, d), nn.Linear(d, kv), nn.Linear(d, kv)
        self.o_proj = nn.Linear(kv, d)

    def forward(self, x):
        q, k, v = self.q_proj(x)[..., : self.k_proj.out_features], self.k_proj(x), self.v_proj(x)
        att = torch.softmax(q @ k.transpose(-1, -2) / 3.0, dim=-1)
        return x + self.o_proj(att @ v)


class TinyLM(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.layers = nn.ModuleList([Attention(), Attention()])
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return self.head(x)


def _workload():
    """Loss = distance to the full-precision output, so any perturbation of K or V raises it."""
    model = TinyLM().eval()
    g = torch.Generator().manual_seed(3)
    xs = [torch.randn(2, 12, 16, generator=g) for _ in range(2)]
    with torch.no_grad():
        batches = [(x, model(x)) for x in xs]
    return Workload(model, batches, nn.functional.mse_loss, name="tiny-attention")


def test_kv_entries_cost_cached_numbers_times_bits_and_fewer_bits_measure_more_damage():
    w = _workload()
    layers = find_kv_layers(w.model)
    assert [l.name for l in layers] == ["layers.0.kv_cache", "layers.1.kv_cache"]
    assert layers[0].per_token == 16  # K and V: 8 numbers a token each
    sens = measure_kv_sensitivity(w, [4, 8, 16])
    for l in layers:
        assert sens[l.name][4] > sens[l.name][8] > 0
    entry = kv_problem_layer(layers[0], 4096, [4, 8, 16], sens[layers[0].name])
    sizes = {o.id: o.bytes for o in entry.options}
    assert sizes == {"kv16": 16 * 4096 * 2, "kv8": 16 * 4096 + 4, "kv4": 16 * 4096 // 2 + 4}
    assert entry.option("kv16").distortion == 0 and entry.option("kv4").bitops == 0


def test_kv_bits_share_the_bytes_budget_with_the_weights_and_apply_quantizes_k_and_v():
    w = _workload()
    weights16 = sum(p.numel() for n, p in w.model.named_parameters() if n.endswith("weight")) * 2
    cache16 = 2 * 16 * 64 * 2
    r = plan_model(w, {"max_bytes": weights16 + cache16 // 2}, estimator="weight-error", kv_bits=[4, 8, 16], context_tokens=64,
                   candidates=None)
    kv = [l for l in r.plan.layers if l.name.endswith(".kv_cache")]
    assert len(kv) == 2 and r.plan.totals.bytes <= weights16 + cache16 // 2
    assert sum(l.bytes for l in kv) < cache16  # the cache gave up bits: the budget counts it with the weights
    x = w.batches[0][0]
    with torch.no_grad():
        ref = w.model(x)
        quantized = apply_plan(w.model, r.plan, inplace=False, batches=w.batches)
        if any(l.w_bits < 16 for l in kv):
            assert not torch.allclose(quantized(x), apply_plan(w.model, r.plan.model_copy(update={"layers": [
                l for l in r.plan.layers if not l.name.endswith(".kv_cache")]}), inplace=False)(x))
    assert torch.equal(w.model(x), ref)


def test_kv_requests_are_checked():
    w = _workload()
    with pytest.raises(DocumentError, match="needs --context-tokens"):
        plan_model(w, {"max_bytes": 1e6}, estimator="weight-error", kv_bits=[8])
    with pytest.raises(DocumentError, match="KV-cache bits are 4, 8 or 16"):
        plan_model(w, {"max_bytes": 1e6}, estimator="weight-error", kv_bits=[2], context_tokens=8)
    with pytest.raises(DocumentError, match="budget the weights and the KV cache together in bytes"):
        plan_model(w, {"max_avg_bits": 8}, estimator="weight-error", kv_bits=[8], context_tokens=8)


def test_tiny_llama_plans_kv_bits_at_4096_tokens_and_exports_kv_cache_scheme_to_llmcompressor(tiny_hf, one_thread):
    from mpq.cost import CandidateSet
    from mpq.model_ref import load_workload

    w = load_workload(str(tiny_hf["llama"]), calib=str(tiny_hf["calib"]))
    kv_numbers = 2 * 2 * 64 * 4096  # K and V x 2 kv heads x head_dim 64 x tokens, per layer
    r = plan_model(w, {"max_bytes": 3.0e6}, estimator="weight-error", candidates=CandidateSet(bits=(4, 8, 16)),
                   kv_bits=[8, 16], context_tokens=4096)
    kv = {l.name: l for l in r.plan.layers if l.name.endswith(".kv_cache")}
    assert set(kv) == {"model.layers.0.self_attn.kv_cache", "model.layers.1.self_attn.kv_cache"}
    assert all(l.params == kv_numbers for l in kv.values())
    assert all(l.bytes == kv_numbers * l.w_bits // 8 + (4 if l.w_bits < 16 else 0) for l in kv.values())
    assert r.plan.totals.bytes == sum(l.bytes for l in r.plan.layers) <= 3.0e6
    plan = r.plan.model_copy(update={"layers": [l.model_copy(update={"option": "fp16", "w_bits": 16, "format": "float", "bytes": 2 * l.params, "bits": 16 * l.params})
                                                if "embed" in l.name else l for l in r.plan.layers]})
    assert {l.option for l in kv.values()} == {"kv8"}  # a kv16 cache (+1 MB) does not fit beside the weights
    export = get_exporter("llmcompressor").export(plan)
    qconfig = json.loads(export.files[1].content)
    assert qconfig["kv_cache_scheme"] == {"num_bits": 8, "type": "int", "symmetric": True, "strategy": "tensor", "dynamic": False}
    ct = pytest.importorskip("compressed_tensors.quantization")
    assert ct.QuantizationConfig.model_validate(qconfig).kv_cache_scheme.num_bits == 8
    assert not any(t.endswith(".kv_cache") for g in qconfig["config_groups"].values() for t in g["targets"])
    assert not any(n.endswith(".kv_cache") for n in qconfig["ignore"])
    kv8 = plan
    with pytest.raises(ExportError, match=r"(?s)KV-cache bits: model.layers.0.self_attn.kv_cache \(kv8\).*no KV-cache scheme"):
        get_exporter("gptqmodel").export(kv8)
    mixed = kv8.model_copy(update={"layers": [l.model_copy(update={"option": "kv4", "w_bits": 4}) if l.name == "model.layers.1.self_attn.kv_cache" else l
                                              for l in kv8.layers]})
    with pytest.raises(ExportError, match="kv_cache_scheme is one scheme for the whole model"):
        get_exporter("llmcompressor").export(mixed)
