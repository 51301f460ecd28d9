"""Every estimator plans every tiny Hugging Face architecture through ``mpq plan DIR --calib FILE``.

The models are random-init and tiny (2 layers, hidden size 32), the calibration text is six short
sentences, and the slow estimators get small probe budgets, so each run takes well under a second
or two. A plan must be written and the sensitivity table behind it must not be all-zero or constant.
"""
from __future__ import annotations

import json

import pytest
import torch

from mpq.cli import main
from tests.helpers.hf_tiny import CAUSAL, ENCODERS, MOE

ARCHS = [k for k in CAUSAL if k != "llama"] + list(ENCODERS) + list(MOE)

#: Small budgets for the estimators whose cost grows with probes; the rest run with their defaults.
FAST = {
    "hessian-trace": ["--param", "min_probes=2", "--param", "max_probes=4", "--param", "sketch=2", "--param", "batches=1"],
    "hessian-eigen": ["--param", "max_iter=3", "--param", "block=1", "--param", "batches=1"],
    "interlayer": ["--param", "max_bits=3"],
}
ESTIMATORS = ["output-gn", "hessian-trace", "hessian-eigen", "fisher", "grad-output", "lrp", "measured", "interlayer", "layer-importance",
              "weight-error"]


def _plan(tiny_hf, arch, tmp_path, *extra):
    out = tmp_path / f"{arch}.json"
    sens = tmp_path / f"{arch}.problem.json"
    rc = main(["plan", str(tiny_hf[arch]), "--calib", str(tiny_hf["calib"]), "--quiet", "--no-cache", "--no-eval",
               "-o", str(out), "--problem-out", str(sens), *extra])
    return rc, out, sens


@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("arch", ARCHS)
def test_every_estimator_plans_every_tiny_architecture(tiny_hf, tmp_path, arch, estimator, one_thread, capsys):
    rc, out, problem = _plan(tiny_hf, arch, tmp_path, "--estimator", estimator, "--bits", "3,4,8", *FAST.get(estimator, []))
    err = capsys.readouterr().err
    assert rc == 0, err
    plan = json.loads(out.read_text())
    assert plan["layers"] and plan["totals"]["avg_bits"] <= 4 + 1e-9
    # the distortions the plan chose from: not all zero, not all equal
    distortions = [o["distortion"] for layer in json.loads(problem.read_text())["layers"] for o in layer["options"]]
    assert any(d != 0 for d in distortions) and len(set(distortions)) > 1


#: With the default estimator's default probe budget some random-init models take minutes (their Hessian
#: blocks have a flat spectrum, so adaptive probing runs to its maximum); those get a probe cap here.
CAPPED = {"tiny_llama", "qwen2", "gpt2", "mixtral"}


@pytest.mark.parametrize("arch", ["tiny_llama", "qwen2", "gpt2", "bert", "mpnet", "mixtral"])
def test_plan_with_no_other_option_writes_a_plan(tiny_hf, tmp_path, arch, one_thread, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    rc = main(["plan", str(tiny_hf[arch]), "--calib", str(tiny_hf["calib"]), *(["--probes", "8"] if arch in CAPPED else [])])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "avg_bits=4" in captured.out and json.loads((tmp_path / "plan.json").read_text())["layers"]


def test_hessian_estimators_restore_the_attention_implementation_exactly(tiny_hf):
    from mpq.graph import discover
    from mpq.sensitivity.base import get_estimator
    from mpq.model_ref import load_workload

    w = load_workload(str(tiny_hf["bert"]), calib=str(tiny_hf["calib"]))
    configs = [m.config for m in w.model.modules() if getattr(m, "config", None) is not None]
    before = [c._attn_implementation_internal for c in configs]
    assert w.model.config._attn_implementation == "sdpa"
    with torch.no_grad():
        out_before = w.model(**w.batches[0][0]).last_hidden_state
    table = get_estimator("hessian-trace", quiet=True, min_probes=2, max_probes=2, sketch=2, batches=1).estimate(w, discover(w))
    assert any(l.score != 0 for l in table.layers.values())
    assert [c._attn_implementation_internal for c in configs] == before
    with torch.no_grad():
        assert torch.equal(w.model(**w.batches[0][0]).last_hidden_state, out_before)


@pytest.mark.parametrize("estimator", ["fisher", "grad-output"])
def test_gradient_estimators_sample_targets_where_the_encoder_loss_has_no_gradient(tiny_hf, estimator):
    from mpq.graph import discover
    from mpq.sensitivity.base import get_estimator
    from mpq.model_ref import load_workload

    w = load_workload(str(tiny_hf["bert"]), calib=str(tiny_hf["calib"]))
    graph = discover(w)
    table = get_estimator(estimator, quiet=True).estimate(w, graph)
    assert table.meta["targets"] == "sampled"
    scores = [l.score for l in table.layers.values()]
    assert min(scores) >= 0 and len(set(scores)) > 1
    again = get_estimator(estimator, quiet=True).estimate(w, graph)
    assert [l.score for l in again.layers.values()] == scores  # seeded draws: the same table twice
    with pytest.raises(Exception, match="zero"):
        get_estimator(estimator, quiet=True, targets="empirical").estimate(w, graph)


def _option_groups(problem_path) -> set:
    return {o["group_size"] for layer in json.loads(problem_path.read_text())["layers"] for o in layer["options"]}


def test_a_hugging_face_plan_chooses_from_per_channel_and_group_128_options_by_default(tiny_hf, tmp_path, one_thread, capsys):
    from mpq.cli import MODEL_GROUP_SIZES

    assert MODEL_GROUP_SIZES == "none,128"
    # the tiny Llama: 256 and 512 inputs (tiny BERT's layers are no wider than a group of 128, so they keep
    # only the per-channel twin: mpq.cost.distinct_specs)
    rc, _, problem = _plan(tiny_hf, "llama", tmp_path, "--bits", "3,4,8")
    assert rc == 0, capsys.readouterr().err
    assert _option_groups(problem) == {None, 128}
    rc, _, problem = _plan(tiny_hf, "llama", tmp_path, "--bits", "3,4,8", "--group-sizes", "none")
    assert rc == 0, capsys.readouterr().err
    assert _option_groups(problem) == {None}
