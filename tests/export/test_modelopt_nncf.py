"""ModelOpt and OpenVINO NNCF exports, applied with the real libraries where they import (the export-test extra)."""
from __future__ import annotations

import pytest
import torch
import yaml

from mpq.export import export_plan
from mpq.pipeline import plan_model



def _model(tiny_hf, dtype=torch.float32):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_hf["llama"], local_files_only=True, torch_dtype=dtype).eval()


def test_modelopt_quant_cfg_enables_exactly_the_planned_weight_quantizers(workload, tiny_hf):
    plan = plan_model(workload, {"max_avg_bits": 7.0}, estimator="weight-error", target="modelopt", preset="nvfp4", use_cache=False).plan
    formats = {l.format for l in plan.layers}
    assert {"nvfp4", "fp8_e4m3"} <= formats or {"nvfp4", "float"} <= formats
    result = export_plan(plan, "modelopt")
    assert result.bytes == plan.totals.bytes
    mtq = pytest.importorskip("modelopt.torch.quantization")
    model = _model(tiny_hf)
    ids = torch.arange(8).unsqueeze(0)
    mtq.quantize(model, yaml.safe_load(result.files[0].content), forward_loop=lambda m: m(ids))
    for l in plan.layers:
        q = model.get_submodule(l.name).weight_quantizer
        if l.format == "float":
            assert not q.is_enabled, l.name
            continue
        assert q.is_enabled, l.name
        if l.format == "nvfp4":
            assert tuple(q.num_bits) == (2, 1) and q.block_sizes[-1] == 16 and tuple(q.block_sizes["scale_bits"]) == (4, 3), l.name
        elif l.format == "fp8_e4m3":
            assert tuple(q.num_bits) == (4, 3) and q.axis == 0, l.name
    assert not any(m.is_enabled for n, m in model.named_modules() if n.endswith("input_quantizer"))


def test_nncf_passes_compress_each_planned_layer_as_planned_and_store_the_planned_bytes(workload, tiny_hf):
    cands = __import__("mpq.targets", fromlist=["candidates"]).candidates("nncf", "int4_asym", symmetric=(True, False), group_sizes=(None, 128))
    plan = plan_model(workload, {"max_avg_bits": 6.0}, estimator="weight-error", target="nncf", candidates=cands, use_cache=False).plan
    result = export_plan(plan, "nncf")
    assert result.bytes == plan.totals.bytes and len(result.data["passes"]) >= 2
    pytest.importorskip("nncf")
    from mpq.export.nncf import compress

    model = compress(_model(tiny_hf), result.data, {"input_ids": torch.arange(8).unsqueeze(0)})
    decompressors = {n.split("post_hooks.")[-1].rsplit(":weight", 1)[0].replace(":", "."): m
                     for n, m in model.named_modules() if type(m).__name__.endswith("WeightsDecompressor")}
    for l in plan.layers:
        w = model.get_submodule(l.name).weight
        if l.format == "float":
            assert l.name not in decompressors and w.dtype == torch.float32, l.name
            continue
        d = decompressors[l.name]
        kind = f"INT{l.w_bits}{'Symmetric' if l.symmetric else 'Asymmetric'}WeightsDecompressor"
        assert type(d).__name__ == kind, (l.name, type(d).__name__)
        stored = w.numel() * w.element_size() + sum(b.numel() * b.element_size() for b in d.buffers())
        assert stored == l.bytes, (l.name, l.option, stored, l.bytes)
