"""The embedded default example: digits CNN, committed weights, fixed splits."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import mpq.examples.digits as digits
from mpq.examples.digits.train import split_digest
from mpq.model_ref import load_workload
from mpq.workload import Workload

PKG = Path(digits.__file__).resolve().parent
META = json.loads((PKG / "weights.json").read_text())

EXPECTED_LAYERS = {
    "features.0": (nn.Conv2d, (16, 1, 3, 3)),
    "features.2": (nn.Conv2d, (32, 16, 3, 3)),
    "features.5": (nn.Conv2d, (32, 32, 3, 3)),
    "classifier.0": (nn.Linear, (64, 512)),
    "classifier.2": (nn.Linear, (10, 64)),
}


@pytest.fixture(scope="module")
def wl() -> Workload:
    return digits.workload()


def test_default_model_reference_resolves_to_the_digits_workload():
    w = load_workload(None, calib_batches=1)
    assert isinstance(w, Workload)
    assert w.name == "mpq.examples.digits:workload"
    assert isinstance(w.model, digits.DigitsCNN)
    assert not w.model.training
    assert len(w.batches) == 1


def test_model_has_stable_layer_names_and_weight_shapes(wl):
    layers = {n: (type(m), tuple(m.weight.shape)) for n, m in wl.model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    assert layers == EXPECTED_LAYERS
    assert wl.model.features[0].weight.numel() == 144


def test_parameter_count_is_small(wl):
    n = sum(p.numel() for p in wl.model.parameters())
    assert 20_000 <= n <= 60_000
    assert n == META["parameters"] == 47_530


def test_model_is_fx_traceable_and_traced_graph_matches(wl):
    traced = torch.fx.symbolic_trace(wl.model)
    x = wl.batches[0][0]
    with torch.no_grad():
        torch.testing.assert_close(traced(x), wl.model(x))


def test_committed_weights_reach_at_least_97_percent_test_accuracy(wl):
    metrics = wl.evaluate(wl.model)
    assert set(metrics) == {"accuracy", "loss"}
    assert metrics["accuracy"] >= 0.97
    assert metrics["accuracy"] == pytest.approx(META["test_accuracy"], abs=1e-5)
    assert metrics["loss"] == pytest.approx(META["test_loss"], rel=1e-3)


def test_evaluate_leaves_train_mode_as_it_found_it(wl):
    model = digits.DigitsCNN().train()
    wl.evaluate(model)
    assert model.training


def test_calibration_batches_are_input_target_pairs_from_the_calibration_split(wl):
    calib = digits.load_data().calib
    assert [len(t) for _, t in wl.batches] == [64, 64]
    xs = torch.cat([x for x, _ in wl.batches])
    ys = torch.cat([y for _, y in wl.batches])
    assert torch.equal(xs, calib.inputs) and torch.equal(ys, calib.targets)
    assert xs.dtype == torch.float32 and xs.shape == (128, 1, 8, 8)
    assert ys.dtype == torch.int64
    assert 0.0 <= float(xs.min()) and float(xs.max()) <= 1.0


def test_batch_size_and_calib_batches_control_the_calibration_batches():
    assert [len(t) for _, t in digits.workload(batch_size=50).batches] == [50, 50, 28]
    assert [len(t) for _, t in digits.workload(batch_size=32, calib_batches=2).batches] == [32, 32]
    assert [len(t) for _, t in digits.workload(batch_size=1000).batches] == [128]
    with pytest.raises(ValueError):
        digits.workload(batch_size=0)
    with pytest.raises(ValueError):
        digits.workload(calib_batches=0)


def test_loss_is_mean_cross_entropy_and_finite(wl):
    x, y = wl.batches[0]
    loss = wl.loss()
    with torch.no_grad():
        assert float(loss) == pytest.approx(float(nn.functional.cross_entropy(wl.model(x), y)))
    assert np.isfinite(wl.calibration_loss())


def test_splits_are_disjoint_and_cover_the_whole_dataset():
    idx = digits.split_indices()
    sizes = {k: len(v) for k, v in idx.items()}
    assert sizes == {"train": 1129, "calib": 128, "test": 540}
    all_idx = np.concatenate([idx["train"], idx["calib"], idx["test"]])
    assert len(np.unique(all_idx)) == 1797
    assert not set(idx["calib"]) & set(idx["test"])


def test_splits_are_identical_across_calls_and_match_the_recorded_split():
    a, b = digits.load_data(), digits.load_data()
    for name in ("train", "calib", "test"):
        assert torch.equal(getattr(a, name).inputs, getattr(b, name).inputs)
        assert torch.equal(getattr(a, name).targets, getattr(b, name).targets)
    assert split_digest() == META["split_sha256"]


def test_weights_file_sha256_matches_weights_json():
    data = (PKG / META["file"]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == META["sha256"]
