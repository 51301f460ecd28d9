"""Plans made for a target (``mpq plan --target``): what each target stores, tied fused layers, and sizes
that equal the bytes the target's own library writes for the planned layers."""
from __future__ import annotations

import json
import math

import pytest
import torch

from mpq import targets
from mpq.cli import main
from mpq.errors import ExportError, TargetError
from mpq.export import available_targets, export_plan
from mpq.export.base import linear_tag
from mpq.pipeline import plan_model
from mpq.schema import Plan, load_document


FUSED = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"))


def make_plan(workload, target, budget=5.0, **kw) -> Plan:
    return plan_model(workload, {"max_avg_bits": budget}, estimator="weight-error", target=target, use_cache=False, **kw).plan


@pytest.fixture(scope="module")
def plans(workload):
    """One plan per target at 5 average bits (mixed 4- and 8-bit layers, float where the target cannot quantize)."""
    return {t: make_plan(workload, t) for t in available_targets()}


def fused_groups(plan):
    groups: dict[tuple, list] = {}
    for l in plan.layers:
        parent, _, leaf = l.name.rpartition(".")
        for i, names in enumerate(FUSED):
            if leaf in names:
                groups.setdefault((parent, i), []).append(l)
    return list(groups.values())


def test_every_target_plans_and_exports_with_the_planned_size(plans):
    for target, plan in plans.items():
        assert plan.provenance.target == target
        assert plan.totals.avg_bits <= 5.0
        result = export_plan(plan, target)
        assert result.bytes == plan.totals.bytes, target
        assert len({l.option for l in plan.layers}) > 1, f"{target}: the plan should mix options"


@pytest.mark.parametrize("target", ["vllm", "llmcompressor"])
def test_fused_modules_of_each_block_carry_one_option(plans, target):
    groups = fused_groups(plans[target])
    assert len(groups) == 4  # q/k/v and gate/up of two blocks
    for group in groups:
        assert len({l.option for l in group}) == 1, [(l.name, l.option) for l in group]


def test_hqq_plans_one_setting_per_linear_tag_so_export_needs_no_merge(plans):
    by_tag: dict[str, set] = {}
    for l in plans["hqq"].layers:
        by_tag.setdefault(linear_tag(l.name), set()).add(l.option)
    assert all(len(v) == 1 for v in by_tag.values())


def test_layers_a_target_cannot_quantize_stay_in_float_inside_the_budget(plans):
    vllm = {l.name: l for l in plans["vllm"].layers}
    assert vllm["model.embed_tokens"].format == "float" and vllm["lm_head"].format == "float"
    gptq = {l.name: l for l in plans["gptqmodel"].layers}
    assert gptq["model.embed_tokens"].format == "float"
    assert sum(l.bytes for l in plans["vllm"].layers) == plans["vllm"].totals.bytes
    # llama.cpp quantizes embeddings, and its options carry each ggml type's own block
    ggml = {l.name: l for l in plans["llamacpp"].layers}
    assert all(l.group_size in (32, 256) for l in ggml.values() if l.format == "int")


def test_target_accounting_differs_from_the_default_where_the_tool_stores_more(workload):
    layer = [64 * 4, 256]
    from mpq.sizes import TARGET_SIZES

    default = TARGET_SIZES["mpq"](layer, 4, 128)
    assert TARGET_SIZES["gptq"](layer, 4, 128) > default  # zero-points even when symmetric, and g_idx
    assert TARGET_SIZES["torchao"](layer, 3, 128) > TARGET_SIZES["torchao"](layer, 4, 128)  # 3 bits unpacked to int8
    assert TARGET_SIZES["ggml"](layer, 4, 256) / math.prod(layer) == 4.5  # q4_K


def test_presets_set_the_grid_and_bad_presets_and_grids_are_named(workload):
    cs = targets.candidates("vllm", "nvfp4")
    assert set(cs.specs()) == {"nvfp4", "fp16"}
    with pytest.raises(TargetError, match=r"no preset 'int3'.*w4a16"):
        targets.candidates("vllm", "int3")
    from mpq.cost import CandidateSet

    with pytest.raises(TargetError, match=r"cannot store any candidate for layer 'model\.layers\.0\.self_attn\.q_proj'.*bits 2,3,4,8"):
        plan_model(workload, {"max_avg_bits": 6}, estimator="weight-error", target="gptqmodel", candidates=CandidateSet(bits=(5, 6, 16)))


def test_a_budget_below_what_the_target_reaches_is_a_named_error(workload):
    with pytest.raises(targets.TargetBudgetError, match=r"below the smallest plan target 'vllm'.*kept in float: model\.embed_tokens") as e:
        make_plan(workload, "vllm", budget=3.0)
    assert 4 < e.value.minimum["max_avg_bits"] < 6


def test_vllm_export_refuses_a_plan_with_different_options_inside_a_fused_module(plans):
    plan = plans["vllm"]
    layers = [l.model_copy(update={"option": "x", "w_bits": 8}) if l.name.endswith("0.self_attn.k_proj") else l for l in plan.layers]
    with pytest.raises(ExportError, match=r"fused modules with different options(.|\n)*--target vllm"):
        export_plan(plan.model_copy(update={"layers": layers}), "vllm")


def test_vllm_fp8_and_nvfp4_presets_export_compressed_tensors_schemes(workload):
    ct = pytest.importorskip("compressed_tensors.quantization")
    from compressed_tensors.quantization.quant_scheme import PRESET_SCHEMES

    for preset, scheme in (("fp8", "FP8_DYNAMIC"), ("nvfp4", "NVFP4A16")):
        plan = make_plan(workload, "vllm", budget=12.0, preset=preset)
        quantized = [l for l in plan.layers if l.format != "float"]
        assert quantized
        config = ct.QuantizationConfig.model_validate(export_plan(plan, "vllm").data["quantization_config"])
        for group in config.config_groups.values():
            assert group.weights == PRESET_SCHEMES[scheme]["weights"]


# ----------------------------------------------------------------------------------------------
# sizes against the libraries' own tensors


def _nbytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def _bf16_llama(tiny_hf):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_hf["llama"], local_files_only=True, torch_dtype=torch.bfloat16)


@pytest.mark.parametrize("target,preset", [("vllm", "w4a16"), ("llmcompressor", "mixed"), ("llmcompressor", "w8a8"),
                                           ("vllm", "fp8"), ("vllm", "nvfp4"), ("llmcompressor", "mxfp4")])
def test_compressed_tensors_compression_stores_exactly_the_planned_bytes(workload, tiny_hf, target, preset):
    ct = pytest.importorskip("compressed_tensors.quantization")
    from compressed_tensors.compressors import ModelCompressor

    cands = targets.candidates(target, preset)
    if preset == "mixed":
        cands = targets.candidates(target, preset, symmetric=(True, False))
    plan = plan_model(workload, {"max_avg_bits": 12.0 if preset in ("fp8", "w8a8") else 5.0}, estimator="weight-error",
                      target=target, candidates=cands, use_cache=False).plan
    model = _bf16_llama(tiny_hf)
    ct.apply_quantization_config(model, ct.QuantizationConfig.model_validate(export_plan(plan, target).data["quantization_config"]))
    for module in model.modules():
        for n, p in module.named_parameters(recurse=False):
            if "scale" in n and p.dtype.is_floating_point:
                p.data.fill_(0.01)
    ModelCompressor.from_pretrained_model(model).compress_model(model)
    state = model.state_dict()
    for l in plan.layers:
        stored = _nbytes(t for k, t in state.items() if k.rpartition(".")[0] == l.name and not k.endswith("bias"))
        assert stored == l.bytes, (l.name, l.option, stored, l.bytes)


def test_torchao_quantize_stores_the_planned_bytes_where_cpu_kernels_exist(workload, tiny_hf):
    pytest.importorskip("torchao")
    from torchao.core.config import config_from_dict
    from torchao.quantization import quantize_

    cands = targets.candidates("torchao", "mixed", bits=(3, 4, 8, 16))
    # the additive optimum (refine=0): this checks torchao's bytes, and needs a plan with int8 and fp8 layers in it
    plan = plan_model(workload, {"max_avg_bits": 6.0}, estimator="weight-error", target="torchao", candidates=cands, use_cache=False,
                      refine=0).plan
    data = json.loads(json.dumps(export_plan(plan, "torchao").data))
    fqn = data["_data"]["fqn_to_config"]
    kinds = {(c or {}).get("_type") for c in fqn.values()}
    assert {"Int8WeightOnlyConfig", "Float8WeightOnlyConfig"} & kinds
    # Int4WeightOnlyConfig packs for CUDA (tinygemm); on CPU its layers are checked by the formula below
    int4 = {n for n, c in fqn.items() if c and c["_type"] == "Int4WeightOnlyConfig"}
    on_cpu = {**data, "_data": {"fqn_to_config": {n: (None if n in int4 else c) for n, c in fqn.items()}}}
    model = _bf16_llama(tiny_hf)
    quantize_(model, config_from_dict(on_cpu), filter_fn=None)
    measured = 0
    for l in plan.layers:
        w = model.get_submodule(l.name).weight
        if l.name in int4:
            out, k = l.shape
            assert l.bytes == (4 * out * k + 32 * out * (k // l.group_size)) // 8
            continue
        if l.format == "float":
            assert l.bytes == w.numel() * 2
            continue
        names, _ = w.__tensor_flatten__()
        assert _nbytes(getattr(w, n) for n in names) == l.bytes, (l.name, l.option)
        measured += 1
    assert measured >= 4


def test_autoround_and_gptq_packing_store_the_planned_bytes(plans, tiny_hf):
    pytest.importorskip("auto_round")
    from auto_round_extension.torch.qlinear_torch import QuantLinear

    for target, g_idx in (("autoround", False), ("gptqmodel", True)):
        for l in plans[target].layers:
            if l.format == "float":
                continue
            out, k = l.shape
            group = l.group_size or k
            linear = torch.nn.Linear(k, out, bias=False)
            q = QuantLinear(l.w_bits, group, k, out, bias=False, g_idx=g_idx)
            q.device = torch.device("cpu")
            scales = torch.full((out, math.ceil(k / group)), 0.01)
            q.pack(linear, scales, torch.full_like(scales, 2 ** (l.w_bits - 1)), None)
            stored = _nbytes(b for _, b in q.named_buffers() if b is not None and _ not in ("wf",))
            assert stored == l.bytes, (target, l.name, l.option, stored, l.bytes)


def test_hqq_quantizer_stores_the_planned_bytes(plans):
    pytest.importorskip("hqq")
    from hqq.core.quantize import BaseQuantizeConfig, HQQLinear

    for l in plans["hqq"].layers:
        if l.format == "float":
            continue
        out, k = l.shape
        q = HQQLinear(torch.nn.Linear(k, out, bias=False), BaseQuantizeConfig(nbits=l.w_bits, group_size=l.group_size),
                      compute_dtype=torch.float16, device="cpu", initialize=True)
        stored = _nbytes([q.W_q] + [v for v in q.meta.values() if torch.is_tensor(v)])
        assert stored == l.bytes, (l.name, l.option, stored, l.bytes)


def test_llamacpp_sizes_are_gguf_type_sizes_and_gguf_quantizes_to_them(plans):
    gguf = pytest.importorskip("gguf")
    import numpy as np

    for l in plans["llamacpp"].layers:
        t = export_plan(plans["llamacpp"], "llamacpp").data["tensor_types"][gguf_names(l.name)]["type"]
        qtype = gguf.GGMLQuantizationType[t.upper()]
        block, size = gguf.GGML_QUANT_SIZES[qtype]
        out, k = l.shape
        assert l.bytes == out * (k // block) * size, (l.name, t)
        if t in ("q8_0", "q4_0", "q5_0", "f16"):
            stored = gguf.quants.quantize(np.random.default_rng(0).standard_normal((out, k), dtype=np.float32), qtype)
            assert stored.nbytes == l.bytes


def gguf_names(name):
    from mpq.export.llamacpp import gguf_name

    return gguf_name(name)


def test_targets_command_lists_targets_presets_and_accounting(capsys):
    assert main(["targets", "--json"]) == 0
    listed = {t["name"]: t for t in json.loads(capsys.readouterr().out)["targets"]}
    assert set(listed) == set(available_targets())
    assert {"w4a16", "w8a8", "fp8", "nvfp4"} <= set(listed["vllm"]["presets"])
    assert listed["vllm"]["fused"] == [list(f) for f in FUSED] and listed["hqq"]["per_tag"]
    assert listed["llamacpp"]["sizes"] == "ggml"


@pytest.mark.parametrize("target", ["vllm", "llamacpp", "hqq"])
def test_plan_then_export_on_the_command_line(tiny_hf, tmp_path, target, capsys):
    plan_path = tmp_path / "plan.json"
    assert main(["plan", str(tiny_hf["llama"]), "--calib", str(tiny_hf["calib"]), "--target", target, "--budget", "avg_bits=5",
                 "--estimator", "weight-error", "--no-eval", "--no-cache", "-o", str(plan_path)]) == 0
    assert load_document(plan_path, Plan).provenance.target == target
    assert main(["export", str(plan_path)]) == 0  # the plan's target is the default
    assert "the plan counts the same" in capsys.readouterr().out
    assert main(["plan", str(tiny_hf["llama"]), "--calib", str(tiny_hf["calib"]), "--target", target, "--preset", "nope",
                 "--budget", "avg_bits=5", "-o", str(tmp_path / "x.json")]) == 2
    assert "has no preset 'nope'" in capsys.readouterr().err


def test_expert_slices_stay_in_float_under_a_target_and_the_plan_exports(tiny_hf, tmp_path):
    """Exporters address modules, so one expert's slice of a fused 3-D tensor is kept in float inside the budget."""
    out = tmp_path / "moe.json"
    rc = main(["plan", str(tiny_hf["mixtral"]), "--calib", str(tiny_hf["calib"]), "--target", "llmcompressor",
               "--estimator", "weight-error", "--budget", "avg_bits=15", "--refine", "0", "--quiet", "--no-cache", "-o", str(out)])
    assert rc == 0
    plan = load_document(out, Plan)
    slices = [l for l in plan.layers if l.name.endswith("]")]
    assert slices and all(l.format == "float" for l in slices)
    assert any(l.format == "int" for l in plan.layers)
    assert main(["export", str(out), "-o", str(tmp_path / "recipe")]) == 0
