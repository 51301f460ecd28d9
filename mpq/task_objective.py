"""The objective the default refinement measures: the distortion of what the model's users consume.

The calibration loss of a sentence encoder's workload is a token-level MSE of the last hidden
state. Users of an encoder consume one vector a text: the hidden states pooled over real tokens
and L2-normalized (sentence-transformers), compared by cosine. Plans that win on the token MSE can
lose on retrieval (``benchmarks/plan_quality.py``: the single-layer DP at 4 bits), so for encoder
workloads the refinement measures ``1 - cos(pooled quantized, pooled full precision)``, averaged
over the texts of a calibration batch and then over batches; every other workload keeps its own
calibration loss (next-token cross-entropy for causal LMs, the user's loss for a Python workload).
:func:`task_objective` gives the workload whose calibration loss is that objective, so every
measured evaluator (``mpq.incremental``, ``mpq.search.measured``) computes it unchanged.

An encoder workload is recognized by its targets: ``{"hidden": last hidden state, "mask": attention
mask}`` (``mpq.hf.load_hf_workload``). The pooling is the one the model directory declares in
``1_Pooling/config.json`` (sentence-transformers; mean, cls or max), else mean pooling.
"""
from __future__ import annotations

import json
from pathlib import Path
from dataclasses import replace
from typing import Any, Callable, Optional

import torch

from .workload import Workload

POOLINGS = ("mean", "cls", "max")


def pool(hidden: torch.Tensor, mask: torch.Tensor, mode: str = "mean") -> torch.Tensor:
    """Sentence embeddings ``[batch, dim]``, L2-normalized, from ``hidden [batch, tokens, dim]`` over real tokens."""
    hidden = hidden.float()
    m = mask.unsqueeze(-1).to(hidden.dtype)
    if mode == "mean":
        out = (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)
    elif mode == "cls":
        out = hidden[:, 0]
    elif mode == "max":
        out = hidden.masked_fill(m == 0, float("-inf")).amax(1)
    else:
        raise ValueError(f"pooling: expected one of {POOLINGS}, got {mode!r}")
    return torch.nn.functional.normalize(out, dim=-1)


def declared_pooling(model_dir: Optional[str]) -> str:
    """The pooling a sentence-transformers directory declares (``1_Pooling/config.json``); mean when none."""
    if model_dir:
        cfg = Path(model_dir) / "1_Pooling" / "config.json"
        try:
            flags = json.loads(cfg.read_text())
        except (OSError, ValueError):
            flags = {}
        for mode in ("cls", "max", "mean"):
            if flags.get(f"pooling_mode_{mode}_token" if mode != "mean" else "pooling_mode_mean_tokens"):
                return mode
    return "mean"


def is_encoder_workload(workload: Workload) -> bool:
    """Targets hold the full-precision last hidden state and the attention mask (an encoder self-distillation)."""
    target = workload.batches[0][1]
    return isinstance(target, dict) and "hidden" in target and "mask" in target


def embedding_loss(pooling: str = "mean") -> Callable[[Any, dict], torch.Tensor]:
    """``loss_fn(outputs, target)``: mean ``1 - cos`` of the batch's pooled sentence embeddings against the full-precision ones."""
    if pooling not in POOLINGS:
        raise ValueError(f"pooling: expected one of {POOLINGS}, got {pooling!r}")

    def loss(outputs: Any, target: dict) -> torch.Tensor:
        hidden = outputs.last_hidden_state if hasattr(outputs, "last_hidden_state") else outputs[0]
        cos = (pool(hidden, target["mask"], pooling) * pool(target["hidden"], target["mask"], pooling)).sum(-1)
        return (1.0 - cos).mean()

    return loss


def task_objective(workload: Workload) -> tuple[str, Workload]:
    """The refinement objective's name and the workload whose calibration loss it is (``workload`` itself
    unless it is an encoder's: then the same model and batches with :func:`embedding_loss`)."""
    if is_encoder_workload(workload):
        pooling = declared_pooling(workload.meta.get("hf_path"))
        return (f"sentence-embedding 1-cos ({pooling} pooling)",
                replace(workload, loss_fn=embedding_loss(pooling), sampling=None))
    return "calibration loss", workload
