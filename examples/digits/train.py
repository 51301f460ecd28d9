"""Reproduce the committed digits CNN weights: ``python -m mpq.examples.digits.train``.

Seeded, CPU-only, single-threaded and with ``torch.use_deterministic_algorithms(True)``, so the same
torch build on the same kind of CPU writes byte-identical weights. Writes ``digits_cnn.pt`` (a
state_dict) and ``weights.json`` (its sha256, test accuracy and training settings).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import HERE, DigitsCNN, evaluate_on, load_data, split_indices

TRAIN_SEED = 0
EPOCHS = 50
BATCH_SIZE = 32
LR = 2e-3
WEIGHT_DECAY = 1e-2


def sha256_file(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def split_digest() -> str:
    """sha256 over the split indices, so a changed split is noticed."""
    h = hashlib.sha256()
    for name, idx in sorted(split_indices().items()):
        h.update(name.encode())
        h.update(np.asarray(idx, dtype=np.int64).tobytes())
    return h.hexdigest()


def random_shift(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Move each image by -1, 0 or +1 pixels along each axis (zero fill): cheap augmentation."""
    n = x.shape[0]
    padded = nn.functional.pad(x, (1, 1, 1, 1))
    dy = torch.randint(0, 3, (n,), generator=gen)
    dx = torch.randint(0, 3, (n,), generator=gen)
    out = torch.empty_like(x)
    for oy in range(3):
        for ox in range(3):
            sel = (dy == oy) & (dx == ox)
            out[sel] = padded[sel, :, oy:oy + 8, ox:ox + 8]
    return out


def train(epochs: int = EPOCHS, seed: int = TRAIN_SEED, log: bool = True) -> tuple[DigitsCNN, dict]:
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(seed)
    data = load_data()
    model = DigitsCNN()
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    gen = torch.Generator().manual_seed(seed)
    xs, ys = data.train
    start = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(ys), generator=gen)
        for i in range(0, len(ys), BATCH_SIZE):
            idx = order[i:i + BATCH_SIZE]
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(random_shift(xs[idx], gen)), ys[idx])
            loss.backward()
            opt.step()
        sched.step()
        if log and (epoch + 1) % 10 == 0:
            m = evaluate_on(model, data.test)
            print(f"epoch {epoch + 1:3d}  train loss {loss.item():.4f}  test acc {m['accuracy']:.4f}  test loss {m['loss']:.4f}")
    seconds = time.perf_counter() - start
    model.eval()
    metrics = evaluate_on(model, data.test)
    info = {
        "test_accuracy": metrics["accuracy"],
        "test_loss": metrics["loss"],
        "calib_loss": evaluate_on(model, data.calib)["loss"],
        "train_seconds": round(seconds, 2),
    }
    return model, info


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=HERE, help="folder for digits_cnn.pt and weights.json (default: the package folder)")
    ap.add_argument("--epochs", type=int, default=EPOCHS)
    args = ap.parse_args(argv)
    model, info = train(epochs=args.epochs)
    args.out.mkdir(parents=True, exist_ok=True)
    weights = args.out / "digits_cnn.pt"
    torch.save(model.state_dict(), weights)
    meta = {
        "file": weights.name,
        "sha256": sha256_file(weights),
        "test_accuracy": round(info["test_accuracy"], 6),
        "test_loss": round(info["test_loss"], 6),
        "calib_loss": round(info["calib_loss"], 6),
        "parameters": sum(p.numel() for p in model.parameters()),
        "split_sha256": split_digest(),
        "train": {"seed": TRAIN_SEED, "epochs": args.epochs, "batch_size": BATCH_SIZE, "optimizer": "AdamW",
                  "lr": LR, "weight_decay": WEIGHT_DECAY, "schedule": "cosine", "augmentation": "random 1-pixel shifts", "threads": 1, "deterministic": True},
        "torch": torch.__version__,
        "machine": platform.machine(),
    }
    (args.out / "weights.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {weights} (sha256 {meta['sha256'][:16]}...), test accuracy {info['test_accuracy']:.4f}, "
          f"trained in {info['train_seconds']:.1f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
