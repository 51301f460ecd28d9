"""The one-call API: mpq.plan / mpq.apply / mpq.export with DataLoaders of tuples, dicts and tensors."""
from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

import mpq
from mpq.errors import DocumentError, UnknownName, WorkloadError
from mpq.pipeline import DEFAULT_ESTIMATOR

ROOT = Path(__file__).resolve().parents[2]
FAST = {"estimator": "weight-error", "use_cache": False}  # data-free and instant where the estimator does not matter


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Linear(16, 32)
        self.b = nn.Linear(32, 4)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))


class KeywordModel(Tiny):
    """Takes keyword arguments and, given labels, returns its own loss, as Hugging Face models do."""

    def forward(self, x, labels=None):
        logits = super().forward(x)
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return SimpleNamespace(logits=logits, loss=loss)


class DictData(Dataset):
    def __init__(self, with_labels: bool):
        g = torch.Generator().manual_seed(1)
        self.x, self.y, self.with_labels = torch.randn(64, 16, generator=g), torch.randint(0, 4, (64,), generator=g), with_labels

    def __len__(self):
        return 64

    def __getitem__(self, i):
        return {"x": self.x[i], "labels": self.y[i]} if self.with_labels else {"x": self.x[i]}


def pairs_loader():
    g = torch.Generator().manual_seed(1)
    return DataLoader(TensorDataset(torch.randn(64, 16, generator=g), torch.randint(0, 4, (64,), generator=g)), batch_size=16)


def test_plan_from_a_dataloader_of_pairs_stays_within_the_budget_and_applies(one_thread):
    model = Tiny()
    plan = mpq.plan(model, pairs_loader(), budget={"avg_bits": 4.5}, loss=nn.functional.cross_entropy,
                    candidates={"bits": [2, 4, 8]}, use_cache=False)
    assert isinstance(plan, mpq.Plan) and plan.totals.avg_bits <= 4.5
    assert {l.name for l in plan.layers} == {"a", "b"}
    assert plan.provenance.estimator == DEFAULT_ESTIMATOR
    before = model.a.weight.detach().clone()
    assert mpq.apply(model, plan) is model
    assert not torch.equal(before, model.a.weight)
    levels = model.a.weight.detach()[0].unique().numel()  # per-channel grid: at most 2^bits levels per row
    assert levels <= 2 ** plan.layers[0].w_bits


def test_plan_from_dicts_uses_the_models_own_loss_when_no_loss_is_given(one_thread):
    model = KeywordModel()
    plan = mpq.plan(model, DataLoader(DictData(with_labels=True), batch_size=16), budget={"mb": 0.0004}, **FAST)
    assert plan.totals.bytes <= 400
    from mpq.calibration import calibration_workload

    wl = calibration_workload(model, DataLoader(DictData(with_labels=True), batch_size=16))
    assert wl.meta["loss"] == "the model's own outputs.loss"


def test_plan_from_unlabelled_tensors_uses_self_distillation(one_thread):
    model = Tiny()
    x = torch.randn(48, 16, generator=torch.Generator().manual_seed(2))
    from mpq.calibration import calibration_workload

    wl = calibration_workload(model, DataLoader(x, batch_size=16))
    assert wl.meta["loss"].startswith("self-distillation") and len(wl.batches) == 3
    assert float(wl.calibration_loss()) == 0.0  # zero at full precision, by construction
    plan = mpq.plan(model, DataLoader(x, batch_size=16), budget="avg_bits=5", estimator="measured", use_cache=False,
                    candidates={"bits": [2, 4, 8]})
    assert plan.totals.avg_bits <= 5


def test_forward_step_and_loss_receive_the_whole_batch(one_thread):
    seen = []

    def forward_step(model, batch):
        seen.append(type(batch).__name__)
        return model(batch["features"])

    def loss(outputs, batch):
        return nn.functional.cross_entropy(outputs, batch["target"])

    data = [{"features": torch.randn(8, 16), "target": torch.randint(0, 4, (8,)), "id": "abc"} for _ in range(3)]
    plan = mpq.plan(Tiny(), data, budget={"avg_bits": 6}, loss=loss, forward_step=forward_step, use_cache=False,
                    candidates={"bits": [4, 8]}, max_batches=2)
    assert plan.totals.avg_bits <= 6 and set(seen) == {"dict"}


def test_a_wrong_budget_key_names_the_known_ones_in_python_and_on_the_command_line(capsys):
    with pytest.raises(DocumentError, match="unknown key 'avgbits'; known keys: avg_bits, mb, bytes, bitops, latency_ms"):
        mpq.plan(Tiny(), pairs_loader(), budget={"avgbits": 4})
    with pytest.raises(DocumentError, match="'max_avg_bits' is the budget key 'avg_bits'"):
        mpq.budget_constraints({"max_avg_bits": 4})
    with pytest.raises(DocumentError, match="budget is required"):
        mpq.plan(Tiny(), pairs_loader())
    from mpq.cli import main

    assert main(["plan", "--budget", "avgbits=4", "-o", "-"]) != 0
    assert "unknown key 'avgbits'; known keys: avg_bits, mb, bytes, bitops, latency_ms" in capsys.readouterr().err


def test_budget_vocabulary_is_one_parser_for_dicts_and_strings():
    assert mpq.budget_constraints({"avg_bits": 4, "mb": 1.5}) == mpq.budget_constraints("avg_bits=4,mb=1.5") \
        == mpq.budget_constraints(["avg_bits=4", "mb=1.5"]) == {"max_avg_bits": 4.0, "max_bytes": 1.5e6}
    with pytest.raises(DocumentError, match="max_bytes is given twice"):
        mpq.budget_constraints({"mb": 1, "bytes": 5})
    with pytest.raises(DocumentError, match="positive finite"):
        mpq.budget_constraints({"bitops": -1})


def test_unknown_solver_or_estimator_is_refused_before_the_model_runs():
    calls = []
    model = Tiny()
    model.register_forward_hook(lambda *a: calls.append(1))
    with pytest.raises(UnknownName, match="unknown solver 'nope'"):
        mpq.plan(model, pairs_loader(), budget={"avg_bits": 4}, loss=nn.functional.cross_entropy, solver="nope")
    with pytest.raises(UnknownName, match="unknown estimator 'hesian'"):
        mpq.plan(model, pairs_loader(), budget={"avg_bits": 4}, loss=nn.functional.cross_entropy, estimator="hesian")
    assert calls == []


def test_bad_data_and_candidates_get_specific_errors():
    with pytest.raises(WorkloadError, match="data is required"):
        mpq.plan(Tiny(), budget={"avg_bits": 4})
    with pytest.raises(WorkloadError, match="batch 0 is a tuple of 3 items"):
        mpq.plan(Tiny(), [(torch.randn(2, 16), 1, 2)], budget={"avg_bits": 4}, loss=nn.functional.cross_entropy)
    with pytest.raises(DocumentError, match="unknown field 'bit'; known fields: bits, group_sizes"):
        mpq.plan(Tiny(), pairs_loader(), budget={"avg_bits": 4}, candidates={"bit": [4]})


def test_export_writes_the_targets_files_and_apply_reads_a_plan_file(tmp_path, one_thread):
    model = Tiny()
    plan = mpq.plan(model, pairs_loader(), budget={"avg_bits": 4}, loss=nn.functional.cross_entropy,
                    candidates={"bits": [2, 4, 8]}, **FAST)
    result = mpq.export(plan, to="hawq", path=tmp_path / "bits.json")
    assert (tmp_path / "bits.json").read_text() == result.files[0].content
    mpq.save_document(plan, tmp_path / "plan.json")
    copy = mpq.apply(Tiny(), tmp_path / "plan.json", inplace=False)
    assert isinstance(copy, nn.Module)


def test_top_level_names_are_listed_and_resolve():
    names = dir(mpq)
    for name in ("plan", "apply", "export", "Plan", "Workload", "CandidateSet", "plan_model", "export_plan", "budget_constraints"):
        assert name in mpq.__all__ and name in names
    for name in mpq.__all__:
        assert getattr(mpq, name) is not None
    assert callable(mpq.plan) and callable(mpq.apply) and callable(mpq.export)
    assert "budget" in inspect.signature(mpq.plan).parameters and "to" in inspect.signature(mpq.export).parameters
    import mpq.plan as plan_module  # the modules behind the callables stay importable as before

    assert hasattr(plan_module, "build_plan") and hasattr(mpq.export, "available_targets")


def test_the_readme_python_script_runs(tmp_path):
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## From Python", 1)[1]
    script = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    env = {**os.environ, "MPQ_CACHE_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "bits per weight" in proc.stdout and "test accuracy" in proc.stdout
    accuracy = float(re.search(r"test accuracy: ([0-9.]+)", proc.stdout).group(1))
    assert accuracy > 0.95
    assert (tmp_path / "digits.recipe.yaml").is_file()


def test_target_restricts_the_plan_to_what_the_quantizer_expresses(one_thread):
    plan = mpq.plan(Tiny(), pairs_loader(), budget={"avg_bits": 8}, candidates={"bits": [2, 4, 5, 8]},
                    target="gptqmodel", use_cache=False)
    assert plan.provenance.target == "gptqmodel"
    assert {l.w_bits for l in plan.layers if l.format == "int"} <= {2, 3, 4, 8}  # GPTQModel has no 5-bit kernel
    assert plan.totals.avg_bits <= 8  # in GPTQ's accounting: scales, zero-points and g_idx count
