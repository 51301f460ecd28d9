"""Default example model: a small CNN on the 8x8 digits, with committed weights.

The 1797 images (UCI optical digits, as bundled with scikit-learn) ship beside the weights as
``digits.npz`` (45 kB), so the example needs no scikit-learn. It gives ``mpq`` a real, offline workload (no downloads) that trains in seconds, so plans,
tests and demos run anywhere. ``python -m mpq.examples.digits.train`` reproduces the weights.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from mpq.workload import Workload

__all__ = ["DigitsCNN", "Split", "DigitsData", "SEED", "load_data", "split_indices", "load_model", "workload"]

HERE = Path(__file__).resolve().parent
WEIGHTS_FILE = HERE / "digits_cnn.pt"
DATA_FILE = HERE / "digits.npz"  # images uint8 [1797, 8, 8] in 0..16, targets uint8 [1797]
META_FILE = HERE / "weights.json"

# The split is fixed: numpy's legacy RandomState(SEED).permutation is guaranteed stable across numpy
# versions. Of the 1797 images, the first TEST_SIZE of the permutation are the test split, the next
# CALIB_SIZE the calibration split and the remaining 1129 the training split.
SEED = 0
TEST_SIZE = 540  # about 30%
CALIB_SIZE = 128


class DigitsCNN(nn.Module):
    """conv 1->16, conv 16->32, maxpool, conv 32->32, linear 512->64, linear 64->10 (47,530 parameters).

    Layer names are stable: ``features.0``, ``features.2``, ``features.5``, ``classifier.0``,
    ``classifier.2``. No data-dependent control flow, so ``torch.fx.symbolic_trace`` works.
    """

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),   # 0
            nn.ReLU(),                        # 1
            nn.Conv2d(16, 32, 3, padding=1),  # 2
            nn.ReLU(),                        # 3
            nn.MaxPool2d(2),                  # 4  8x8 -> 4x4
            nn.Conv2d(32, 32, 3, padding=1),  # 5
            nn.ReLU(),                        # 6
        )
        self.classifier = nn.Sequential(
            nn.Linear(32 * 4 * 4, 64),  # 0
            nn.ReLU(),                  # 1
            nn.Linear(64, 10),          # 2
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


class Split(NamedTuple):
    inputs: torch.Tensor   # float32 [N, 1, 8, 8] in [0, 1]
    targets: torch.Tensor  # int64 [N]


class DigitsData(NamedTuple):
    train: Split
    calib: Split
    test: Split


def split_indices() -> dict[str, np.ndarray]:
    """Indices into the 1797 images of each split (disjoint, fixed)."""
    perm = np.random.RandomState(SEED).permutation(1797)
    return {
        "test": perm[:TEST_SIZE],
        "calib": perm[TEST_SIZE:TEST_SIZE + CALIB_SIZE],
        "train": perm[TEST_SIZE + CALIB_SIZE:],
    }


def load_data() -> DigitsData:
    """The train / calibration / test splits as tensors (fresh copies on every call)."""
    with np.load(DATA_FILE) as arrays:
        images, targets = arrays["images"], arrays["targets"]
    if images.shape != (1797, 8, 8) or targets.shape != (1797,):
        raise RuntimeError(f"{DATA_FILE} holds images {images.shape} and targets {targets.shape}, expected (1797, 8, 8) and (1797,)")
    x = torch.from_numpy((images / 16.0).astype(np.float32)).unsqueeze(1)
    y = torch.from_numpy(targets.astype(np.int64))
    idx = split_indices()
    parts = {k: Split(x[torch.from_numpy(v)].clone(), y[torch.from_numpy(v)].clone()) for k, v in idx.items()}
    return DigitsData(train=parts["train"], calib=parts["calib"], test=parts["test"])


def load_model() -> DigitsCNN:
    """The CNN with the committed weights, in eval mode."""
    model = DigitsCNN()
    state = torch.load(WEIGHTS_FILE, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.eval()


def evaluate_on(model: nn.Module, split: Split) -> dict:
    """Accuracy and mean cross-entropy of ``model`` on ``split``; restores the model's train/eval mode."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            logits = model(split.inputs)
            loss = nn.functional.cross_entropy(logits, split.targets)
            acc = (logits.argmax(dim=1) == split.targets).float().mean()
    finally:
        model.train(was_training)
    return {"accuracy": float(acc), "loss": float(loss)}


def workload(batch_size: int = 64, calib_batches: int | None = None) -> Workload:
    """The default workload: committed CNN, calibration batches, mean cross-entropy, test-split evaluator.

    The 128 calibration images are cut into batches of ``batch_size`` (in a fixed order);
    ``calib_batches`` keeps only the first that many.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if calib_batches is not None and calib_batches < 1:
        raise ValueError(f"calib_batches must be at least 1 or None, got {calib_batches}")
    data = load_data()
    xs, ys = data.calib
    batches = [(xs[i:i + batch_size], ys[i:i + batch_size]) for i in range(0, len(ys), batch_size)]
    if calib_batches is not None:
        batches = batches[:calib_batches]
    test = data.test

    def evaluate(model: nn.Module) -> dict:
        return evaluate_on(model, test)

    meta = {"dataset": "UCI optical digits 8x8 (digits.npz, as in sklearn.datasets.load_digits)", "split_seed": SEED,
            "sizes": {k: len(getattr(data, k).targets) for k in ("train", "calib", "test")}}
    if META_FILE.exists():
        meta["weights"] = json.loads(META_FILE.read_text())
    return Workload(
        model=load_model(),
        batches=batches,
        loss_fn=nn.functional.cross_entropy,
        evaluate=evaluate,
        name="mpq.examples.digits:workload",
        meta=meta,
    )
