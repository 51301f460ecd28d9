"""Hugging Face models from a local directory, as an :class:`mpq.Workload`.

The model and tokenizer load with ``local_files_only=True``: nothing is ever downloaded. Layer
names are the model's own ``named_modules()`` names (``model.layers.0.self_attn.q_proj``), so a plan
reads back into any tool that uses Hugging Face names.

Losses:
- causal LMs use the language-model loss (next-token cross-entropy, ``labels = input_ids`` with
  padding ignored);
- encoders use self-distillation: the mean squared error between the last hidden state and the
  full-precision model's own last hidden state on the same batch (computed once at load time),
  divided by the mean square of the full-precision state, over real (non-padding) tokens. Its
  value and gradient are exactly zero at full precision, so first-order estimators (gradient x
  perturbation, an empirical Fisher built from this loss's gradients) see nothing there; its
  Hessian at full precision is the Gauss-Newton matrix ``J^T J / n``, so Hessian-trace and measured
  loss estimators are well defined and meaningful. ``workload.meta["zero_gradient_at_full_precision"]``
  says so, for estimators to check.

Embeddings and ``lm_head``: ``nn.Embedding`` and ``lm_head`` are quantizable layers like any other.
When ``lm_head`` shares its weight with the input embedding (``tie_word_embeddings``, e.g. GPT-2),
the two are one tensor: :func:`mpq.graph.discover` lists it once, under the embedding's name, and
quantizing it quantizes both; ``workload.meta["tied"]`` names the pair.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from .errors import WorkloadError
from .workload import Workload

DEFAULT_MAX_LENGTH = 128
DEFAULT_BATCH_SIZE = 4
DEFAULT_MAX_SAMPLES = 64


def read_calibration_text(path: str | Path, max_samples: Optional[int] = DEFAULT_MAX_SAMPLES) -> list[str]:
    """Samples from ``.txt`` (one per non-empty line) or ``.jsonl`` (the ``text`` field of each line)."""
    path = Path(path)
    if not path.is_file():
        raise WorkloadError(f"calibration file {str(path)!r} does not exist (give --calib FILE: .txt one sample a line, or .jsonl with a 'text' field)")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise WorkloadError(f"calibration file {str(path)!r} is not UTF-8 text: {e.reason} at byte {e.start}") from None
    samples: list[str] = []
    if path.suffix == ".jsonl":
        for i, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise WorkloadError(f"calibration file {str(path)!r}, line {i}: not JSON ({e.msg})") from None
            text = obj.get("text") if isinstance(obj, dict) else None
            if not isinstance(text, str):
                raise WorkloadError(f"calibration file {str(path)!r}, line {i}: expected an object with a string 'text' field")
            if text.strip():
                samples.append(text)
    elif path.suffix == ".txt":
        samples = [line for line in lines if line.strip()]
    else:
        raise WorkloadError(f"calibration file {str(path)!r}: expected a .txt (one sample a line) or .jsonl (a 'text' field a line) file")
    if not samples:
        raise WorkloadError(f"calibration file {str(path)!r} has no non-empty sample")
    return samples[:max_samples] if max_samples else samples


def _is_causal_lm(config) -> bool:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    archs = getattr(config, "architectures", None) or []
    if any(a.endswith("ForCausalLM") or a.endswith("LMHeadModel") for a in archs):
        return True
    if archs:
        return False
    return config.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and not getattr(config, "is_encoder_decoder", False)


def lm_loss(outputs: Any, labels: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy; label ``-100`` (padding) is ignored."""
    logits = outputs.logits if hasattr(outputs, "logits") else outputs[0]
    shift_logits = logits[:, :-1, :].float()
    shift_labels = labels[:, 1:]
    return nn.functional.cross_entropy(shift_logits.reshape(-1, shift_logits.shape[-1]), shift_labels.reshape(-1), ignore_index=-100)


def distillation_loss(outputs: Any, target: dict) -> torch.Tensor:
    """MSE of the last hidden state to the full-precision one, relative to its mean square, over real tokens."""
    hidden = outputs.last_hidden_state if hasattr(outputs, "last_hidden_state") else outputs[0]
    teacher, mask = target["hidden"], target["mask"].unsqueeze(-1).to(hidden.dtype)
    err = ((hidden.float() - teacher) ** 2 * mask).sum()
    ref = (teacher**2 * mask).sum().clamp(min=1e-12)
    return err / ref


def load_hf_workload(
    path: str | Path,
    calib: Optional[str | Path] = None,
    *,
    max_length: int = DEFAULT_MAX_LENGTH,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_samples: Optional[int] = DEFAULT_MAX_SAMPLES,
    dtype: torch.dtype = torch.float32,
) -> Workload:
    """Load a local Hugging Face model directory and tokenize ``calib`` into calibration batches."""
    try:
        from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer
    except ImportError:
        raise WorkloadError("loading a Hugging Face model needs transformers: pip install 'mpq-planner[hf]'") from None
    path = Path(path)
    if not (path / "config.json").is_file():
        raise WorkloadError(f"{str(path)!r} is not a Hugging Face model directory: it has no config.json")
    if calib is None:
        raise WorkloadError(f"Hugging Face model {str(path)!r} needs calibration text: give --calib FILE (.txt one sample a line, or .jsonl with a 'text' field)")
    samples = read_calibration_text(calib, max_samples)
    try:
        config = AutoConfig.from_pretrained(path, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as e:
        raise WorkloadError(f"cannot load the config or tokenizer of {str(path)!r}: {e}") from None
    causal = _is_causal_lm(config)
    cls = AutoModelForCausalLM if causal else AutoModel
    try:
        import transformers
        from packaging.version import Version

        # transformers renamed ``torch_dtype`` to ``dtype`` in 4.56
        dtype_arg = "dtype" if Version(transformers.__version__) >= Version("4.56") else "torch_dtype"
        model = cls.from_pretrained(path, local_files_only=True, **{dtype_arg: dtype})
    except (OSError, ValueError) as e:
        raise WorkloadError(f"cannot load the model weights of {str(path)!r}: {e}") from None
    model.eval()
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise WorkloadError(f"the tokenizer of {str(path)!r} has neither a pad nor an eos token to pad batches with")
        tokenizer.pad_token = tokenizer.eos_token

    batches = []
    for start in range(0, len(samples), batch_size):
        enc = tokenizer(samples[start : start + batch_size], return_tensors="pt", padding=True, truncation=True, max_length=max_length)
        inputs = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
        if causal:
            labels = enc["input_ids"].clone()
            labels[enc["attention_mask"] == 0] = -100
            batches.append((inputs, labels))
        else:
            with torch.no_grad():
                hidden = model(**inputs).last_hidden_state.detach().float()
            batches.append((inputs, {"hidden": hidden, "mask": enc["attention_mask"]}))

    tied = []
    out_emb, in_emb = model.get_output_embeddings() if causal else None, model.get_input_embeddings()
    if out_emb is not None and in_emb is not None and out_emb.weight is in_emb.weight:
        names = {id(m): n for n, m in model.named_modules()}
        tied.append([names[id(in_emb)], names[id(out_emb)]])
    meta = {
        "hf_path": str(path), "model_type": config.model_type, "causal_lm": causal,
        "loss": "lm-cross-entropy" if causal else "self-distillation-mse",
        "zero_gradient_at_full_precision": not causal, "tied": tied, "samples": len(samples),
    }
    return Workload(model=model, batches=batches, loss_fn=lm_loss if causal else distillation_loss, name=str(path), meta=meta)
