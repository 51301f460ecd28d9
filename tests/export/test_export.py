"""Exports of a mixed plan on the tiny Llama, each resolved layer by layer with the target's own code."""
from __future__ import annotations

import copy
import json

import pytest
import torch
import yaml

from mpq.errors import ExportError
from mpq.export import available_targets, export_plan, write_export
from mpq.graph import discover
from mpq.quant import QuantSpec
from mpq.schema import save_document

from tests.helpers import gptq_dynamic
from tests.helpers.plans import llama_mixed_specs, plan_from_specs

TARGETS = ["autoround", "gptqmodel", "hawq", "hqq", "llamacpp", "llmcompressor", "modelopt", "nncf", "torchao", "vllm"]


@pytest.fixture(scope="module")
def llama_config(tiny_hf):
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(tiny_hf["llama"], local_files_only=True)


def meta_llama(config):
    from transformers import LlamaForCausalLM

    with torch.device("meta"):
        return LlamaForCausalLM(config)


@pytest.fixture(scope="module")
def graph(llama_config):
    return discover(meta_llama(llama_config))


@pytest.fixture(scope="module")
def mixed(graph):
    """Mixed bits (2, 3, 4, 8, float) and group sizes (none, 32, 64, 128), one asymmetric projection."""
    return plan_from_specs(graph, llama_mixed_specs())


@pytest.fixture(scope="module")
def per_channel(graph):
    return plan_from_specs(graph, llama_mixed_specs(per_channel_only=True))


def planned(layer):
    """(bits, group size) as planned; float layers are (16, None)."""
    return (16, None) if layer.format == "float" else (layer.w_bits, layer.group_size)


def test_every_target_is_registered():
    assert available_targets() == TARGETS


def test_gptqmodel_dynamic_resolves_every_layer_to_its_planned_bits_and_group(mixed):
    config = export_plan(mixed, "gptqmodel").data
    config = json.loads(json.dumps(config))
    assert config["bits"] in gptq_dynamic.VALID_BITS and config["group_size"] in gptq_dynamic.VALID_GROUP_SIZES
    for key, overrides in config["dynamic"].items():
        assert key[:2] in ("+:", "-:") and gptq_dynamic.literal_of(key[2:]) is not None  # exact names only
        assert overrides.get("bits", 4) in (2, 3, 4, 8) and overrides.get("group_size", -1) in gptq_dynamic.VALID_GROUP_SIZES
    for l in mixed.layers:
        if l.format == "float":
            assert gptq_dynamic.dynamic_get(config, l.name, "bits") is False
            continue
        got = (gptq_dynamic.dynamic_get(config, l.name, "bits"), gptq_dynamic.dynamic_get(config, l.name, "group_size"),
               gptq_dynamic.dynamic_get(config, l.name, "sym"))
        assert got == (l.w_bits, -1 if l.group_size is None else l.group_size, l.symmetric), l.name
    # anchored: a name that merely contains a planned one does not match it
    assert gptq_dynamic.resolve(config["dynamic"], "model.layers.0.self_attn.q_proj_extra") is None
    assert config["lm_head"] is True


def test_llmcompressor_recipe_and_config_validate_and_apply_to_a_meta_model(mixed, llama_config):
    ct = pytest.importorskip("compressed_tensors.quantization")
    result = export_plan(mixed, "llmcompressor")
    recipe = yaml.safe_load(result.files[0].content)
    modifier = recipe["quant_stage"]["quant_modifiers"]["QuantizationModifier"]
    from_recipe = ct.QuantizationConfig.model_validate({"config_groups": modifier["config_groups"], "ignore": modifier["ignore"]})
    config = ct.QuantizationConfig.model_validate(json.loads(result.files[1].content))
    assert from_recipe.config_groups == config.config_groups
    targets = [t for g in config.config_groups.values() for t in g.targets]
    assert len(targets) == len(set(targets)) and not any(t.startswith("re:") for t in targets)
    model = meta_llama(llama_config)
    ct.apply_quantization_config(model, config)
    for l in mixed.layers:
        scheme = getattr(model.get_submodule(l.name), "quantization_scheme", None)
        if l.format == "float":
            assert scheme is None, l.name
            continue
        w = scheme.weights
        assert (w.num_bits, w.group_size, w.symmetric) == (l.w_bits, l.group_size, l.symmetric), l.name
        assert w.strategy == ("channel" if l.group_size is None else "group")


def test_llmcompressor_maps_fp4_and_fp8_to_mx_schemes(graph):
    ct = pytest.importorskip("compressed_tensors.quantization")
    from compressed_tensors.quantization.quant_scheme import PRESET_SCHEMES

    plan = plan_from_specs(graph, {"model.layers.0.mlp.up_proj": QuantSpec(4, None, "fp4_e2m1"),
                                   "model.layers.0.mlp.down_proj": QuantSpec(8, 32, "fp8_e4m3")})
    config = ct.QuantizationConfig.model_validate(json.loads(export_plan(plan, "llmcompressor").files[1].content))
    by_target = {t: g.weights for g in config.config_groups.values() for t in g.targets}
    assert by_target["model.layers.0.mlp.up_proj"] == PRESET_SCHEMES["MXFP4"]["weights"]
    assert by_target["model.layers.0.mlp.down_proj"] == PRESET_SCHEMES["MXFP8"]["weights"]


def test_autoround_layer_config_resolves_on_a_meta_model(mixed, llama_config):
    pytest.importorskip("auto_round")
    from auto_round.compressors.utils import set_layer_config
    from auto_round.schemes import QuantizationScheme
    from auto_round.utils.common import INNER_SUPPORTED_LAYER_TYPES, SUPPORTED_LAYER_TYPES

    data = export_plan(mixed, "autoround").data
    model = meta_llama(llama_config)
    scheme = QuantizationScheme.from_dict({"bits": data["bits"], "group_size": data["group_size"], "sym": data["sym"],
                                           "data_type": "int", "act_bits": 16})
    blocks = [[f"model.layers.{i}" for i in range(llama_config.num_hidden_layers)]]
    resolved, _, _ = set_layer_config(model, copy.deepcopy(data["layer_config"]), scheme, torch.float16, SUPPORTED_LAYER_TYPES,
                                      INNER_SUPPORTED_LAYER_TYPES, quant_block_list=blocks, quant_lm_head=data["quant_lm_head"])
    for l in mixed.layers:
        if l.format == "float":
            assert resolved.get(l.name, {"bits": 16})["bits"] >= 16, l.name
            continue
        m = model.get_submodule(l.name)
        assert (m.bits, m.group_size, m.sym) == (l.w_bits, -1 if l.group_size is None else l.group_size, l.symmetric), l.name


def test_autoround_refuses_layers_it_would_silently_keep_in_float(graph):
    plan = plan_from_specs(graph, {"model.layers.0.self_attn.k_proj": QuantSpec(4, None)})
    bad = plan.model_copy(update={"layers": [plan.layers[0].model_copy(update={"shape": [40, 256]})]})
    with pytest.raises(ExportError, match="multiples of 32"):
        export_plan(bad, "autoround")


def test_hqq_config_constructs_and_transformers_tags_every_linear_as_planned(mixed, llama_config):
    pytest.importorskip("hqq")
    from transformers import HqqConfig
    from transformers.integrations.hqq import prepare_for_hqq_linear

    config = HqqConfig(**export_plan(mixed, "hqq").data)
    model = meta_llama(llama_config)
    prepare_for_hqq_linear(model, quantization_config=config)
    for l in mixed.layers:
        qc = getattr(model.get_submodule(l.name), "quant_config", None)
        if l.format == "float":
            assert qc is None, l.name
            continue
        params = qc["weight_quant_params"]
        assert (params["nbits"], params["group_size"]) == (l.w_bits, l.group_size), l.name


def test_hqq_refuses_per_index_differences_unless_merged_and_then_says_what_it_merged(graph):
    plan = plan_from_specs(graph, llama_mixed_specs(vary_index=True))
    with pytest.raises(ExportError, match=r"varies across layer indices(.|\n)*self_attn\.q_proj(.|\n)*--merge max"):
        export_plan(plan, "hqq")
    result = export_plan(plan, "hqq", merge="max")
    assert result.data["dynamic_config"]["self_attn.q_proj"] == {"nbits": 8, "group_size": 32}
    merged = [n for n in result.notes if n.startswith("merged self_attn.q_proj")]
    assert merged and "model.layers.1.self_attn.q_proj 8 bits, group 128" in merged[0] and merged[0].endswith("-> 8 bits, group 32")


def test_torchao_config_from_dict_quantizes_each_fqn_as_planned(mixed, llama_config):
    pytest.importorskip("torchao")
    from torchao.core.config import config_from_dict
    from torchao.quantization import FqnToConfig, Int4WeightOnlyConfig, quantize_
    from transformers import LlamaForCausalLM

    data = json.loads(export_plan(mixed, "torchao").files[0].content)
    config = config_from_dict(data)
    assert isinstance(config, FqnToConfig)
    # 4-bit groups pack with Int4WeightOnlyConfig (CUDA's tinygemm layout); the rest quantize on CPU
    int4 = {n for n, c in config.fqn_to_config.items() if isinstance(c, Int4WeightOnlyConfig)}
    assert int4 == {l.name for l in mixed.layers if l.format == "int" and l.w_bits == 4 and l.group_size in (32, 64, 128, 256)}
    assert all(config.fqn_to_config[n].group_size == mixed.layer(n).group_size for n in int4)
    on_cpu = {**data, "_data": {"fqn_to_config": {n: (None if n in int4 else c) for n, c in data["_data"]["fqn_to_config"].items()}}}
    torch.manual_seed(0)
    model = LlamaForCausalLM(llama_config).to(torch.bfloat16)
    quantize_(model, config_from_dict(on_cpu), filter_fn=None)
    for l in mixed.layers:
        w = model.get_submodule(l.name).weight
        if l.format == "float" or l.name in int4:
            assert type(w) is torch.nn.Parameter, l.name
            continue
        k = l.shape[1]
        if type(w).__name__ == "Int8Tensor":  # Int8WeightOnlyConfig: 8 bits, per row or group
            assert l.w_bits == 8 and w.qdata.dtype == torch.int8 and w.scale.shape == (l.shape[0], k // (l.group_size or k)), l.name
            continue
        assert w.target_dtype == getattr(torch, f"int{l.w_bits}") and w.block_size == (1, l.group_size or k), l.name


def test_llamacpp_tensor_types_match_exactly_one_gguf_tensor_each_with_the_planned_bits(mixed, llama_config, tmp_path):
    gguf = pytest.importorskip("gguf")
    result = export_plan(mixed, "llamacpp")
    paths = write_export(result, tmp_path / "types.txt")
    assert [p.name for p in paths] == ["types.txt", "types.json"]
    # llama-quantize reads whitespace-separated NAME=TYPE tokens and lowercases NAME
    rules = []
    for token in paths[0].read_text().split():
        pattern, _, ggml = token.partition("=")
        rules.append((__import__("re").compile(pattern.lower()), ggml))
    record = json.loads(paths[1].read_text())["tensor_types"]
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, llama_config.num_hidden_layers)
    nominal = {"q2_K": 2, "q3_K": 3, "q4_K": 4, "q4_0": 4, "q4_1": 4, "q5_K": 5, "q5_0": 5, "q5_1": 5, "q6_K": 6, "q8_0": 8,
               "mxfp4": 4, "f16": 16}
    model = meta_llama(llama_config)
    all_tensors = [names.get_name(n.removesuffix(".weight")) + ".weight" for n, _ in model.named_parameters()]
    for l in mixed.layers:
        tensor = names.get_name(l.name) + ".weight"
        hits = [t for r, t in rules if r.search(tensor)]
        assert len(hits) == 1, tensor
        ggml = hits[0]
        assert nominal[ggml] == planned(l)[0], (l.name, ggml)
        block, type_size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[ggml.upper()]]
        assert record[tensor]["bits_per_weight"] == type_size * 8 / block and record[tensor]["hf_name"] == l.name
        assert (l.shape[1] % block) == 0
    unplanned = [t for t in all_tensors if t not in record]
    assert unplanned and not any(r.search(t) for r, _ in rules for t in unplanned)  # norms are left to llama-quantize


def test_hawq_bit_config_names_every_layer_exactly(per_channel):
    data = export_plan(per_channel, "hawq").data
    bits = data["bit_config_mpq"]
    assert bits == {l.name: planned(l)[0] for l in per_channel.layers}


def test_hawq_refuses_group_wise_layers(mixed):
    with pytest.raises(ExportError, match="group sizes none"):
        export_plan(mixed, "hawq")


def test_five_bits_pruning_float_formats_and_channel_groups_are_refused_with_suggestions(graph):
    five = plan_from_specs(graph, {"model.layers.0.mlp.up_proj": QuantSpec(5, 128)})
    with pytest.raises(ExportError, match=r"runs 2,3,4,8 bits; re-plan with --bits 2,3,4,8,16"):
        export_plan(five, "gptqmodel")
    pruned = plan_from_specs(graph, {"model.layers.0.mlp.up_proj": QuantSpec(4, 128, prune_ratio=0.5, prune_structure="2:4")})
    for target in ("gptqmodel", "hqq", "torchao", "llamacpp", "autoround", "llmcompressor", "hawq"):
        with pytest.raises(ExportError, match="--prune 0"):
            export_plan(pruned, target)
    e5m2 = plan_from_specs(graph, {"model.layers.0.mlp.up_proj": QuantSpec(8, None, "fp8_e5m2")})
    for target in TARGETS:
        with pytest.raises(ExportError, match="--formats"):
            export_plan(e5m2, target)
    split = plan_from_specs(graph, {"model.layers.0.mlp.up_proj": QuantSpec(4, None)})
    layer = split.layers[0].model_copy(update={"name": "model.layers.0.mlp.up_proj[0:64]", "module": "model.layers.0.mlp.up_proj",
                                               "channels": (0, 64)})
    split = split.model_copy(update={"layers": [layer]})
    for target in TARGETS:
        with pytest.raises(ExportError, match="plan whole layers"):
            export_plan(split, target)


def test_quantized_embeddings_are_refused_where_unsupported_and_keep_float_says_so(graph):
    plan = plan_from_specs(graph, {"model.embed_tokens": QuantSpec(4, None), "model.layers.0.mlp.up_proj": QuantSpec(4, None)})
    with pytest.raises(ExportError, match="quantized embeddings(.|\n)*--keep-float"):
        export_plan(plan, "gptqmodel")
    result = export_plan(plan, "gptqmodel", keep_float_layers=["model.embed_tokens"])
    assert "-:^model\\.embed_tokens$" in result.data["dynamic"] and "kept in float on request" in result.notes[0]
    assert export_plan(plan, "llamacpp").data["tensor_types"]["token_embd.weight"]["type"] == "q4_K"


def test_export_command_writes_files_and_refuses_with_exit_code_2(mixed, graph, tmp_path, capsys):
    from mpq.cli import main

    save_document(mixed, tmp_path / "plan.json")
    assert main(["export", str(tmp_path / "plan.json"), "--to", "llmcompressor"]) == 0
    assert (tmp_path / "plan.llmcompressor.recipe.yaml").is_file() and (tmp_path / "plan.llmcompressor.quantization_config.json").is_file()
    assert main(["export", str(tmp_path / "plan.json"), "--to", "torchao", "-o", str(tmp_path / "ao.json")]) == 0
    assert json.loads((tmp_path / "ao.json").read_text())["_type"] == "FqnToConfig"
    varying = plan_from_specs(graph, llama_mixed_specs(vary_index=True))
    save_document(varying, tmp_path / "vary.json")
    capsys.readouterr()
    assert main(["export", str(tmp_path / "vary.json"), "--to", "hqq", "-o", str(tmp_path / "h.json")]) == 2
    assert "--merge max" in capsys.readouterr().err and not (tmp_path / "h.json").exists()
    assert main(["export", str(tmp_path / "vary.json"), "--to", "hqq", "--merge", "max", "-o", str(tmp_path / "h.json")]) == 0
    assert "merged self_attn.q_proj" in capsys.readouterr().out


def test_activation_bits_are_refused_by_weight_only_targets_and_kept_by_others(graph):
    plan = plan_from_specs(graph, {"model.layers.0.mlp.up_proj": QuantSpec(4, None, a_bits=8)})
    for target in ("gptqmodel", "hqq", "llamacpp"):
        with pytest.raises(ExportError, match="quantizes weights only; re-plan without --a-bits"):
            export_plan(plan, target)
    assert export_plan(plan, "hawq").data["bit_config_mpq"]["model.layers.0.mlp.up_proj.quant_act"] == 8
    groups = export_plan(plan, "llmcompressor").data["quantization_config"]["config_groups"]
    assert groups["group_0"]["input_activations"]["num_bits"] == 8
    assert export_plan(plan, "torchao").data["_data"]["fqn_to_config"]["model.layers.0.mlp.up_proj"]["_type"] == "Int8DynamicActivationIntxWeightConfig"
    ao = pytest.importorskip("torchao.core.config")
    config = ao.config_from_dict(json.loads(json.dumps(export_plan(plan, "torchao").data)))
    assert type(config.fqn_to_config["model.layers.0.mlp.up_proj"]).__name__ == "Int8DynamicActivationIntxWeightConfig"
    ct = pytest.importorskip("compressed_tensors.quantization")
    ct.QuantizationConfig.model_validate(export_plan(plan, "llmcompressor").data["quantization_config"])


def test_ported_gptqmodel_matcher_agrees_with_gptqmodel_itself_when_installed(mixed, graph):
    import sys

    before = {n: m for n, m in sys.modules.items() if n == "gptqmodel" or n.startswith("gptqmodel.")}
    try:
        try:
            QuantizeConfig = gptq_dynamic.load_real_quantize_config(sys.modules)
        except ImportError as e:  # GPTQModel present without its own requirements (pcre, logbar)
            pytest.skip(f"GPTQModel's config module does not import here: {e}")
        if QuantizeConfig is None:
            pytest.skip("GPTQModel is not installed (it needs a CUDA torchvision to import; see tests/helpers/gptq_dynamic.py)")
        overlapping = {r"+:^model\.layers\.0\..*": {"bits": 8}, r"-:^model\.layers\.0\.mlp\.up_proj$": {}, r"+:.*up_proj": {"bits": 2}}
        configs = [json.loads(json.dumps(export_plan(p, "gptqmodel").data))
                   for p in (mixed, plan_from_specs(graph, llama_mixed_specs(vary_index=True)))]
        configs.append({"bits": 4, "group_size": 128, "sym": True, "dynamic": overlapping})
        for data in configs:
            real = QuantizeConfig(**copy.deepcopy(data))
            for name in list(graph.names) + ["model.layers.0.mlp.up_proj_x"]:
                for key in ("bits", "group_size", "sym"):
                    assert real.dynamic_get(name, key, getattr(real, key)) == gptq_dynamic.dynamic_get(data, name, key), (name, key)
    finally:
        for n in [n for n in sys.modules if n == "gptqmodel" or n.startswith("gptqmodel.")]:
            del sys.modules[n]
        sys.modules.update(before)
