"""The objective the default refinement measures: the distortion of what the model's users consume.

The calibration loss of a sentence encoder's workload is a token-level MSE of the last hidden
state. Users of an encoder consume one vector a text: the hidden states pooled over real tokens
and L2-normalized (sentence-transformers), compared by cosine. Plans that win on the token MSE can
lose on retrieval (FINDINGS: the single-layer DP at 4 bits), so for encoder workloads the
refinement measures ``1 - cos(pooled quantized, pooled full precision)``, averaged over the
calibration texts; every other workload keeps its own calibration loss (next-token cross-entropy
for causal LMs, the user's loss for a Python workload).

An encoder workload is recognized by its targets: ``{"hidden": last hidden state, "mask": attention
mask}`` (``mpq.hf.load_hf_workload``). The pooling is the one the model directory declares in
``1_Pooling/config.json`` (sentence-transformers; mean, cls or max), else mean pooling.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Optional

import torch

from .schema import Plan
from .search.measured import measured_objective
from .workload import Workload, call_model

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


def embedding_distortion(workload: Workload, pooling: str = "mean") -> Callable[[torch.nn.Module], float]:
    """``model -> mean(1 - cos)`` of its pooled sentence embeddings against the full-precision ones, over the calibration texts."""
    references = [pool(t["hidden"], t["mask"], pooling) for _, t in workload.batches]

    def distortion(model: torch.nn.Module) -> float:
        total, count = 0.0, 0
        with torch.no_grad():
            for (inputs, target), ref in zip(workload.batches, references):
                out = call_model(model, inputs)
                hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
                cos = (pool(hidden, target["mask"], pooling) * ref).sum(-1)
                total += float((1.0 - cos).sum())
                count += cos.numel()
        return total / count

    return distortion


def task_objective(workload: Workload) -> tuple[str, Callable[[Plan], float]]:
    """The refinement's measured objective for ``workload`` and its name (reported beside the result)."""
    if is_encoder_workload(workload):
        pooling = declared_pooling(workload.meta.get("hf_path"))
        return f"sentence-embedding 1-cos ({pooling} pooling)", measured_objective(workload, embedding_distortion(workload, pooling))
    return "calibration loss", measured_objective(workload)

