"""The default refinement's objective: pooled sentence-embedding cosine for encoders, the calibration loss otherwise."""
import json

import pytest
import torch
from torch import nn

from mpq.cost import CandidateSet
from mpq.model_ref import load_workload
from mpq.pipeline import DEFAULT_REFINE_EVALS, plan_model
from mpq.plan import violations
from mpq.search.measured import measured_objective
from mpq.task_objective import declared_pooling, is_encoder_workload, pool, task_objective
from mpq.workload import Workload
from tests.helpers.hf_tiny import tiny_hf  # noqa: F401  (session fixture)
from tests.helpers.models import mlp_batches, tiny_mlp

CANDIDATES = CandidateSet(bits=(2, 3, 4, 8))


def test_pooling_counts_only_real_tokens_and_normalizes():
    hidden = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [100.0, 100.0]]])
    mask = torch.tensor([[1, 1, 0]])
    assert torch.allclose(pool(hidden, mask, "mean"), torch.tensor([[2 ** -0.5, 2 ** -0.5]]))
    assert torch.allclose(pool(hidden, mask, "cls"), torch.tensor([[1.0, 0.0]]))
    assert torch.allclose(pool(hidden, mask, "max"), torch.tensor([[2 ** -0.5, 2 ** -0.5]]))
    with pytest.raises(ValueError, match="pooling"):
        pool(hidden, mask, "sum")


def test_declared_pooling_reads_the_sentence_transformers_config(tmp_path):
    assert declared_pooling(None) == "mean" and declared_pooling(str(tmp_path)) == "mean"
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False}))
    assert declared_pooling(str(tmp_path)) == "cls"


def test_encoder_objective_is_zero_at_full_precision_and_grows_with_noise(tiny_hf, one_thread):
    wl = load_workload(str(tiny_hf["bert"]), calib=str(tiny_hf["calib"]))
    assert is_encoder_workload(wl)
    name, measured = task_objective(wl)
    assert name == "sentence-embedding 1-cos (mean pooling)" and measured.model is wl.model

    def distortion(model):
        return measured.calibration_loss(model)

    assert distortion(wl.model) == pytest.approx(0.0, abs=1e-6)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in wl.model.modules():
            if isinstance(m, nn.Linear):
                m.weight.add_(torch.randn(m.weight.shape, generator=gen))
    assert distortion(wl.model) > 1e-3


def test_other_workloads_keep_their_calibration_loss(one_thread):
    wl = Workload(model=tiny_mlp(), batches=mlp_batches(), loss_fn=nn.functional.cross_entropy, name="tiny-mlp")
    assert not is_encoder_workload(wl)
    name, measured = task_objective(wl)
    assert name == "calibration loss" and measured is wl
    objective = measured_objective(measured)
    plan = plan_model(wl, {"max_avg_bits": 4.0}, candidates=CANDIDATES, refine=0, use_cache=False).plan
    assert objective(plan) > wl.calibration_loss()


@pytest.mark.parametrize("bits", [3.0, 4.5])
def test_default_plan_of_an_encoder_refines_on_the_embedding_objective(tiny_hf, one_thread, bits):
    """Budget holds, the result is deterministic, and it is never worse than its seed on the objective it measured."""
    wl = load_workload(str(tiny_hf["bert"]), calib=str(tiny_hf["calib"]))
    name, measured = task_objective(wl)
    objective = measured_objective(measured)
    assert name.startswith("sentence-embedding")
    seed = plan_model(wl, {"max_avg_bits": bits}, candidates=CANDIDATES, refine=0, use_cache=False).plan
    runs = [plan_model(wl, {"max_avg_bits": bits}, candidates=CANDIDATES, use_cache=False) for _ in range(2)]
    first = runs[0]
    assert first.refinement.objective_name == name
    assert [l.option for l in first.plan.layers] == [l.option for l in runs[1].plan.layers]
    assert not violations(first.plan.totals, {"max_avg_bits": bits})
    assert first.refinement.evaluations <= DEFAULT_REFINE_EVALS
    assert objective(first.plan) == pytest.approx(first.refinement.objective)
    assert objective(first.plan) <= objective(seed) + 1e-12
