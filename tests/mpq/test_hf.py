"""Hugging Face models from a local directory: names, losses, calibration files, and `mpq apply` on them."""
from __future__ import annotations

import json

import pytest
import torch

from mpq.errors import WorkloadError
from mpq.graph import discover
from mpq.hf import read_calibration_text
from mpq.quant import QuantSpec, weight_matrix
from mpq.schema import save_document
from mpq.model_ref import load_workload

from tests.helpers.plans import plan_from_specs


def test_causal_lm_workload_uses_module_names_and_the_models_own_lm_loss(tiny_hf):
    w = load_workload(str(tiny_hf["llama"]), calib=str(tiny_hf["calib"]))
    names = discover(w).names
    assert "model.layers.1.mlp.down_proj" in names and "lm_head" in names and "model.embed_tokens" in names
    inputs, labels = w.batches[0]
    with torch.no_grad():
        reference = w.model(**inputs, labels=labels).loss
    assert float(w.loss()) == pytest.approx(float(reference), rel=1e-5)
    assert w.meta["causal_lm"] and not w.meta["zero_gradient_at_full_precision"]


def test_encoder_self_distillation_is_zero_at_full_precision_and_grows_under_quantization(tiny_hf):
    w = load_workload(str(tiny_hf["bert"]), calib=str(tiny_hf["calib"]))
    assert w.meta["loss"] == "self-distillation-mse" and w.meta["zero_gradient_at_full_precision"]
    assert w.calibration_loss() == pytest.approx(0.0, abs=1e-10)
    layer = w.model.get_submodule("encoder.layer.0.intermediate.dense")
    with torch.no_grad():
        layer.weight.copy_(torch.sign(layer.weight) * layer.weight.abs().mean())
    assert w.calibration_loss() > 1e-6


def test_gpt2_conv1d_layers_are_found_and_the_tied_lm_head_is_planned_once(tiny_hf):
    w = load_workload(str(tiny_hf["gpt2"]), calib=str(tiny_hf["calib"]))
    graph = discover(w)
    assert "transformer.h.0.attn.c_attn" in graph.names and graph.layers["transformer.h.0.attn.c_attn"].kind == "Conv1D"
    assert graph.layers["transformer.h.0.mlp.c_fc"].shape == [128, 32]  # output channels first
    assert "lm_head" not in graph.names and "transformer.wte" in graph.names
    assert w.meta["tied"] == [["transformer.wte", "lm_head"]]


@pytest.mark.parametrize("name,content,match", [
    ("missing.txt", None, "does not exist"),
    ("empty.txt", "\n  \n", "no non-empty sample"),
    ("bad.jsonl", '{"text": "ok"}\nnot json\n', "line 2: not JSON"),
    ("notext.jsonl", '{"body": "x"}\n', "line 1: expected an object with a string 'text'"),
    ("data.csv", "a,b\n", r"expected \.txt"),
    ("list.json", '{"text": "x"}', "expected a JSON list"),
    ("items.json", '[{"body": "x"}]', "item 1: expected a string or an object with a string 'text'"),
])
def test_bad_calibration_files_get_clear_errors(tmp_path, name, content, match):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(WorkloadError, match=match):
        read_calibration_text(path)


def test_jsonl_calibration_reads_the_text_field(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"text": "one two"}\n\n{"text": "three", "id": 3}\n')
    assert read_calibration_text(path) == ["one two", "three"]


def test_hf_directory_without_calibration_is_refused(tiny_hf):
    with pytest.raises(WorkloadError, match="--calib"):
        load_workload(str(tiny_hf["llama"]))


def test_mpq_apply_on_a_hf_directory_quantizes_prunes_and_saves_with_the_plan(tiny_hf, tmp_path, capsys):
    from safetensors import safe_open

    from mpq.cli import main

    w = load_workload(str(tiny_hf["gpt2"]), calib=str(tiny_hf["calib"]))
    specs = {
        "transformer.h.0.attn.c_attn": QuantSpec(3, 16, symmetric=False),
        "transformer.h.0.mlp.c_fc": QuantSpec(4, None, prune_ratio=0.5),
        "transformer.h.1.mlp.c_proj": QuantSpec(4, None, "fp4_e2m1", a_bits=8),
        "transformer.h.1.attn.c_attn": QuantSpec(8, None, prune_ratio=0.5, prune_structure="2:4"),
    }
    plan = plan_from_specs(discover(w), specs)
    save_document(plan, tmp_path / "plan.json")
    out = tmp_path / "q.safetensors"
    rc = main(["apply", str(tiny_hf["gpt2"]), str(tmp_path / "plan.json"), "--calib", str(tiny_hf["calib"]), "--eval", "--save", str(out)])
    text = capsys.readouterr().out
    assert rc == 0 and "calibration_loss" in text and "before" in text and "after" in text
    with safe_open(str(out), "pt") as f:
        assert json.loads(f.metadata()["mpq_plan"])["layers"][0]["name"] == "transformer.h.0.attn.c_attn"
        ranges = json.loads(f.metadata()["mpq_activation_ranges"])
        assert set(ranges) == {"transformer.h.1.mlp.c_proj"} and ranges["transformer.h.1.mlp.c_proj"]["bits"] == 8
        saved = {k: f.get_tensor(k) for k in f.keys()}
    assert (tmp_path / "q.plan.json").is_file()

    def mat(name):  # Conv1D stores [in, out]: rows of the saved tensor's transpose are output channels
        return saved[f"{name}.weight"].t()

    attn = mat("transformer.h.0.attn.c_attn")
    for row in attn:
        for i in range(0, row.numel(), 16):
            assert len(torch.unique(row[i : i + 16])) <= 8
    fc = mat("transformer.h.0.mlp.c_fc")
    assert int((fc == 0).sum()) >= fc.numel() // 2
    assert all(len(torch.unique(r)) <= 2**4 for r in fc)
    sparse = mat("transformer.h.1.attn.c_attn").reshape(96, -1, 4)
    assert ((sparse != 0).sum(dim=2) <= 2).all()
    untouched = weight_matrix(w.model.get_submodule("transformer.h.0.attn.c_proj"))
    assert torch.equal(mat("transformer.h.0.attn.c_proj"), untouched)


def test_calibration_from_json_parquet_and_a_saved_dataset_with_a_chosen_field(tmp_path):
    (tmp_path / "c.json").write_text(json.dumps(["one", {"body": "two"}, "  "]).replace('{"body": "two"}', '"two"'))
    assert read_calibration_text(tmp_path / "c.json") == ["one", "two"]
    (tmp_path / "c.jsonl").write_text('{"body": "a b"}\n{"body": "c"}\n')
    assert read_calibration_text(tmp_path / "c.jsonl", field="body") == ["a b", "c"]
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    pq.write_table(pa.table({"content": ["first text", "", "second"]}), tmp_path / "c.parquet")
    assert read_calibration_text(tmp_path / "c.parquet", field="content") == ["first text", "second"]
    with pytest.raises(WorkloadError, match="no column 'text'.*--calib-field"):
        read_calibration_text(tmp_path / "c.parquet")
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_dict({"text": ["x y", "z"]}).save_to_disk(str(tmp_path / "ds"))
    assert read_calibration_text(tmp_path / "ds") == ["x y", "z"]


@pytest.mark.parametrize("case,code,match", [
    ("not-a-model", 5, "no config.json"),
    ("missing-hub-id", 5, "neither a local directory nor in the local Hugging Face cache"),
    ("empty-calib", 5, "no non-empty sample"),
    ("seq-len", 2, "--seq-len 4096 is beyond the 64 positions"),
])
def test_bad_hugging_face_input_gets_a_named_error_and_its_exit_code(tiny_hf, tmp_path, monkeypatch, capsys, case, code, match):
    from mpq.cli import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    model, calib, extra = str(tiny_hf["gpt2"]), str(tiny_hf["calib"]), []
    if case == "not-a-model":
        (tmp_path / "dir").mkdir()
        model = str(tmp_path / "dir")
    elif case == "missing-hub-id":
        model = "nobody/no-such-model"
    elif case == "empty-calib":
        (tmp_path / "empty.txt").write_text("\n \n")
        calib = str(tmp_path / "empty.txt")
    else:
        extra = ["--seq-len", "4096"]
    rc = main(["layers", model, "--calib", calib, *extra])
    err = capsys.readouterr().err
    assert rc == code and match in err and "Traceback" not in err


def test_a_hub_id_resolves_from_the_local_cache_offline(tiny_hf, tmp_path):
    """``org/name`` found in a Hugging Face cache laid out as the hub writes it (refs/main -> snapshots/<commit>), in a
    fresh process whose environment points HF_HOME and HF_HUB_CACHE there and forbids the network (HF_HUB_OFFLINE)."""
    import os
    import shutil
    import subprocess
    import sys

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hf" / "hub" / "models--tiny-org--tiny-gpt2"
    shutil.copytree(tiny_hf["gpt2"], repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_CACHE": str(tmp_path / "hf" / "hub"), "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    code = ("import sys; from mpq.hf import load_hf_workload; w = load_hf_workload('tiny-org/tiny-gpt2', sys.argv[1]); "
            "print(w.meta['hf_path'], w.meta['model_type'], len(w.batches))")
    run = subprocess.run([sys.executable, "-c", code, str(tiny_hf["calib"])], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split() == [str(repo / "snapshots" / commit), "gpt2", "2"]  # 6 sentences, batches of 4


@pytest.mark.parametrize("kind", ["llama", "bert"])
def test_a_bfloat16_model_plans_end_to_end(kind, tiny_hf, tmp_path, one_thread):
    """``--dtype bfloat16``: the model loads in bf16, the default estimator and refinement run on it, and the plan is written."""
    import json

    from mpq.cli import main

    out = tmp_path / "plan.json"
    rc = main(["plan", str(tiny_hf[kind]), "--calib", str(tiny_hf["calib"]), "--dtype", "bfloat16", "--budget", "avg_bits=5",
               "--quiet", "--no-cache", "--no-eval", "-o", str(out)])
    assert rc == 0
    plan = json.loads(out.read_text())
    assert plan["layers"] and plan["totals"]["avg_bits"] <= 5 + 1e-9
    assert plan["provenance"]["estimator"] == "output-gn"


def test_calibration_samples_of_similar_length_share_a_batch_and_each_is_used_once(tiny_hf, tmp_path):
    from mpq.hf import length_groups
    from transformers import AutoTokenizer

    words = "the quick brown fox jumps over the lazy dog again and again".split()
    texts = [" ".join(words[: n]) for n in (12, 1, 7, 2, 11, 3)]  # long and short interleaved, as a file may hold them
    calib = tmp_path / "mixed.txt"
    calib.write_text("\n".join(texts) + "\n")
    w = load_workload(str(tiny_hf["bert"]), calib=str(calib), hf={"batch_size": 2})
    tok = AutoTokenizer.from_pretrained(str(tiny_hf["bert"]))
    lengths = [len(tok(t)["input_ids"]) for t in texts]
    assert length_groups(tok, texts, 2, 64) == [[0, 4], [1, 3], [2, 5]]  # (12, 11), (1, 2), (7, 3): longest first, file order kept
    rows = sorted(tuple(ids[mask.bool()].tolist()) for inputs, _ in w.batches for ids, mask in zip(inputs["input_ids"], inputs["attention_mask"]))
    assert rows == sorted(tuple(tok(t)["input_ids"]) for t in texts)  # every sample once, none cut or padded inside
    padded = sum(int(inputs["attention_mask"].numel()) for inputs, _ in w.batches)
    assert padded == sum(max(lengths[i] for i in g) * len(g) for g in [[0, 4], [1, 3], [2, 5]]) < 2 * 3 * max(lengths)
