"""Hugging Face models, from a local directory or the local hub cache, as an :class:`mpq.Workload`.

The model and tokenizer load with ``local_files_only=True``: nothing is ever downloaded. A hub id
(``org/name``) resolves from the local Hugging Face cache only. Layer names are the model's own
``named_modules()`` names (``model.layers.0.self_attn.q_proj``), so a plan reads back into any
tool that uses Hugging Face names; fused 3-D expert tensors get one layer per expert
(``model.layers.0.mlp.experts.gate_up_proj[3]``, see :mod:`mpq.experts`).

Losses:
- causal LMs use the language-model loss (next-token cross-entropy, ``labels = input_ids`` with
  padding ignored);
- encoders use self-distillation: the mean squared error between the last hidden state and the
  full-precision model's own last hidden state on the same batch (computed once at load time),
  divided by the mean square of the full-precision state, over real (non-padding) tokens. Its
  value and gradient are exactly zero at full precision, so first-order estimators see nothing
  there; its Hessian at full precision is the Gauss-Newton matrix ``2 J^T J / ref``.
  ``workload.meta["zero_gradient_at_full_precision"]`` says so.

Sampled targets (``workload.sampling``): gradient-based estimators (``fisher``, ``grad-output``)
draw targets from the model's own output distribution, one backward pass per sample, so the
outer product of the gradients is, in expectation, the Fisher / Gauss-Newton matrix of the loss:
a causal LM samples each next token from its softmax (the true Fisher of the cross-entropy); an
encoder draws a Gaussian cotangent ``z ~ N(0, 2/ref)`` on every real token's hidden state and
uses the loss ``<z, h>`` (the Gauss-Newton matrix of the self-distillation loss).

Embeddings and ``lm_head``: ``nn.Embedding`` and ``lm_head`` are quantizable layers like any other.
When ``lm_head`` shares its weight with the input embedding (``tie_word_embeddings``, e.g. GPT-2),
the two are one tensor: :func:`mpq.graph.discover` lists it once, under the embedding's name, and
quantizing it quantizes both; ``workload.meta["tied"]`` names the pair.

Calibration text: ``.txt`` (one sample a non-empty line), ``.jsonl`` (a string field of each
object, ``text`` unless ``field`` says otherwise), ``.json`` (a list of strings or of objects with
that field), ``.parquet`` (a string column) or a directory written by ``datasets``'
``save_to_disk`` (a string column; its ``train`` split when it holds several). Samples of similar
token length share a batch (:func:`length_groups`), so that few padded positions are computed.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any, Iterator, Optional

import torch
from torch import nn

from .errors import LoadOptionError, WorkloadError
from .workload import TargetSampling, Workload

DEFAULT_MAX_LENGTH = 128
DEFAULT_BATCH_SIZE = 4
DEFAULT_MAX_SAMPLES = 64
DEFAULT_FIELD = "text"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
CALIB_FORMATS = ".txt (one sample a line), .jsonl or .json (a text field), .parquet, or a datasets.save_to_disk directory"

#: Loggers of optional libraries that transformers imports, whose start-up notices are not mpq's.
NOISY_LOGGERS = ("torchao", "torch.utils._pytree", "transformers", "huggingface_hub", "datasets", "accelerate")


@contextlib.contextmanager
def quiet_libraries() -> Iterator[None]:
    """Optional libraries' loggers, warnings and progress bars silenced inside the block, restored after."""
    loggers = [logging.getLogger(n) for n in NOISY_LOGGERS]
    levels = [lg.level for lg in loggers]
    env = {k: os.environ.get(k) for k in ("TRANSFORMERS_VERBOSITY", "HF_HUB_DISABLE_PROGRESS_BARS")}
    os.environ["TRANSFORMERS_VERBOSITY"] = "error"
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            bars = None
            try:
                from transformers.utils import logging as hf_logging

                bars = hf_logging.is_progress_bar_enabled()
                hf_logging.disable_progress_bar()
                hf_logging.set_verbosity_error()
            except ImportError:
                pass
            try:
                yield
            finally:
                if bars:
                    hf_logging.enable_progress_bar()
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
        for k, v in env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# ----------------------------------------------------------------------------------------------
# Calibration text


def _texts_from_records(records: list, source: str, field: str) -> list[str]:
    samples = []
    for i, obj in enumerate(records, 1):
        text = obj if isinstance(obj, str) else obj.get(field) if isinstance(obj, dict) else None
        if not isinstance(text, str):
            raise WorkloadError(f"calibration {source}, item {i}: expected a string or an object with a string {field!r} field")
        samples.append(text)
    return samples


def _column(table_columns: list[str], column: Any, source: str, field: str) -> list[str]:
    if field not in table_columns:
        raise WorkloadError(f"calibration {source} has no column {field!r} (columns: {', '.join(table_columns)}); give --calib-field")
    values = list(column)
    if values and not all(isinstance(v, str) for v in values if v is not None):
        raise WorkloadError(f"calibration {source}: column {field!r} does not hold text")
    return [v for v in values if isinstance(v, str)]


def read_calibration_text(path: str | Path, max_samples: Optional[int] = DEFAULT_MAX_SAMPLES, field: str = DEFAULT_FIELD) -> list[str]:
    """The non-empty text samples of a calibration file or dataset directory (the first ``max_samples``)."""
    path = Path(path)
    source = repr(str(path))
    if path.is_dir():
        samples = _read_dataset_dir(path, source, field)
    elif not path.is_file():
        raise WorkloadError(f"calibration file {source} does not exist (give --calib FILE: {CALIB_FORMATS})")
    elif path.suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise WorkloadError("reading a .parquet calibration file needs pyarrow: pip install pyarrow") from None
        try:
            table = pq.read_table(path)
        except Exception as e:  # pyarrow raises its own error types for a malformed file
            raise WorkloadError(f"calibration file {source} is not a readable parquet file: {e}") from None
        samples = _column(table.column_names, table.column(field).to_pylist() if field in table.column_names else [], f"file {source}", field)
    else:
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise WorkloadError(f"calibration file {source} is not UTF-8 text: {e.reason} at byte {e.start}") from None
        if path.suffix == ".jsonl":
            samples = []
            for i, line in enumerate(text.splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise WorkloadError(f"calibration file {source}, line {i}: not JSON ({e.msg})") from None
                value = obj.get(field) if isinstance(obj, dict) else None
                if not isinstance(value, str):
                    raise WorkloadError(f"calibration file {source}, line {i}: expected an object with a string {field!r} field")
                samples.append(value)
        elif path.suffix == ".json":
            try:
                records = json.loads(text)
            except json.JSONDecodeError as e:
                raise WorkloadError(f"calibration file {source}: not JSON ({e.msg} at line {e.lineno})") from None
            if not isinstance(records, list):
                raise WorkloadError(f"calibration file {source}: expected a JSON list of strings or of objects with a {field!r} field")
            samples = _texts_from_records(records, f"file {source}", field)
        elif path.suffix == ".txt":
            samples = text.splitlines()
        else:
            raise WorkloadError(f"calibration file {source}: expected {CALIB_FORMATS}")
    samples = [s for s in samples if s.strip()]
    if not samples:
        raise WorkloadError(f"calibration file {source} has no non-empty sample")
    return samples[:max_samples] if max_samples else samples


def _read_dataset_dir(path: Path, source: str, field: str) -> list[str]:
    if not ((path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file()):
        raise WorkloadError(f"calibration directory {source} is not a datasets.save_to_disk directory (no dataset_info.json or dataset_dict.json)")
    try:
        with quiet_libraries():
            from datasets import DatasetDict, load_from_disk

            ds = load_from_disk(str(path))
    except ImportError:
        raise WorkloadError("reading a saved dataset directory needs datasets: pip install datasets") from None
    except Exception as e:  # datasets raises its own error types for a malformed directory
        raise WorkloadError(f"calibration directory {source} cannot be read by datasets.load_from_disk: {e}") from None
    if isinstance(ds, DatasetDict):
        split = "train" if "train" in ds else next(iter(ds), None)
        if split is None:
            raise WorkloadError(f"calibration directory {source} holds no split")
        ds = ds[split]
    return _column(list(ds.column_names), ds[field] if field in ds.column_names else [], f"directory {source}", field)


# ----------------------------------------------------------------------------------------------
# Losses and target sampling


def _is_causal_lm(config) -> bool:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    archs = getattr(config, "architectures", None) or []
    if any(a.endswith("ForCausalLM") or a.endswith("LMHeadModel") for a in archs):
        return True
    if archs:
        return False
    return config.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and not getattr(config, "is_encoder_decoder", False)


def _logits(outputs: Any) -> torch.Tensor:
    return outputs.logits if hasattr(outputs, "logits") else outputs[0]


def _hidden(outputs: Any) -> torch.Tensor:
    return outputs.last_hidden_state if hasattr(outputs, "last_hidden_state") else outputs[0]


def lm_loss(outputs: Any, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy; label ``-100`` (padding) is ignored, and a batch (or a per-sample
    slice of one) without any next token has loss 0, not NaN."""
    logits = _logits(outputs)
    shift_logits = logits[:, :-1, :].float()
    shift_labels = labels[:, 1:].reshape(-1)
    total = nn.functional.cross_entropy(shift_logits.reshape(-1, shift_logits.shape[-1]), shift_labels, ignore_index=-100, reduction="sum")
    return total / (shift_labels != -100).sum().clamp(min=1)


def sample_lm_labels(outputs: Any, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Labels drawn from the model's own next-token distribution at every real position (padding stays -100)."""
    logits = _logits(outputs).detach().float()
    probs = torch.softmax(logits[:, :-1, :], dim=-1).reshape(-1, logits.shape[-1]).cpu()
    drawn = torch.multinomial(probs, 1, generator=generator).reshape(logits.shape[0], -1).to(labels.device)
    sampled = labels.clone()
    sampled[:, 1:] = torch.where(labels[:, 1:] == -100, labels[:, 1:], drawn)
    return sampled


def distillation_loss(outputs: Any, target: dict) -> torch.Tensor:
    """MSE of the last hidden state to the full-precision one, relative to its mean square, over real tokens."""
    hidden = _hidden(outputs)
    teacher, mask = target["hidden"], target["mask"].unsqueeze(-1).to(hidden.dtype)
    err = ((hidden.float() - teacher) ** 2 * mask).sum()
    ref = (teacher**2 * mask).sum().clamp(min=1e-12)
    return err / ref


def sample_cotangent(outputs: Any, target: dict, generator: torch.Generator) -> dict:
    """A Gaussian cotangent ``z ~ N(0, 2/ref)`` on every real token's hidden state (zero on padding)."""
    teacher, mask = target["hidden"], target["mask"].unsqueeze(-1).to(target["hidden"].dtype)
    ref = (teacher**2 * mask).sum().clamp(min=1e-12)
    z = torch.randn(teacher.shape, generator=generator, dtype=torch.float32).to(teacher.device)
    return {"cotangent": z * mask * torch.sqrt(2.0 / ref)}


def cotangent_loss(outputs: Any, target: dict) -> torch.Tensor:
    """``<z, h>``: its gradient is ``J^T z``, whose outer product has the Gauss-Newton matrix as expectation."""
    return (_hidden(outputs).float() * target["cotangent"]).sum()


# ----------------------------------------------------------------------------------------------
# Loading


def resolve_model_path(ref: str | Path) -> Path:
    """A local model directory, or a hub id (``org/name``) found in the local Hugging Face cache."""
    path = Path(ref)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise WorkloadError(f"{str(path)!r} is not a Hugging Face model directory: it has no config.json")
        return path
    if path.exists():
        raise WorkloadError(f"{str(path)!r} is a file, not a Hugging Face model directory")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise WorkloadError("loading a Hugging Face model needs transformers: pip install 'mpq-planner[hf]'") from None
    try:
        with quiet_libraries():
            return Path(snapshot_download(str(ref), local_files_only=True))
    except Exception:  # the hub raises several types (not cached, bad id); all mean "not here"
        raise WorkloadError(
            f"model {str(ref)!r} is neither a local directory nor in the local Hugging Face cache "
            f"({os.environ.get('HF_HUB_CACHE') or os.environ.get('HF_HOME') or '~/.cache/huggingface'}); "
            "mpq never downloads: fetch it first (e.g. `hf download ...`) or give its directory"
        ) from None


def _max_positions(config) -> Optional[int]:
    for key in ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            # RoBERTa-style models reserve the first pad_token_id + 1 positions
            offset = (getattr(config, "pad_token_id", None) or 0) + 1 if config.model_type in ("roberta", "xlm-roberta", "camembert", "mpnet") else 0
            return value - offset
    return None


def length_groups(tokenizer: Any, samples: list[str], batch_size: int, max_length: int) -> list[list[int]]:
    """Sample indices in batches of ``batch_size`` samples of similar token length (longest first, ties in file order),
    the batches in the order of their first sample in the file.

    A batch is padded to its longest sample, so batching the file's samples in file order pads short ones
    to the long ones they happen to sit beside (64% of MiniLM's calibration tokens at ``--seq-len 128``
    were padding). Padding changes no real token's output (it is masked) nor the loss (it ignores padding);
    every sample is used once either way. What changes is the number of padded positions every pass runs,
    and which samples share a batch (losses are means per batch, then over batches)."""
    lengths = [len(ids) for ids in tokenizer(samples, truncation=True, max_length=max_length)["input_ids"]]
    order = sorted(range(len(samples)), key=lambda i: (-lengths[i], i))
    groups = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
    return sorted((sorted(g) for g in groups), key=lambda g: g[0])


def load_hf_workload(
    path: str | Path,
    calib: Optional[str | Path] = None,
    *,
    max_length: Optional[int] = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_samples: Optional[int] = DEFAULT_MAX_SAMPLES,
    dtype: torch.dtype | str = torch.float32,
    device: str = "cpu",
    trust_remote_code: bool = False,
    calib_field: str = DEFAULT_FIELD,
) -> Workload:
    """Load a local Hugging Face model (directory or cached hub id) and tokenize ``calib`` into calibration batches.

    ``max_length`` (tokens per sample) defaults to 128 or the model's positions, whichever is fewer;
    asking for more than the model's positions is an error."""
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise LoadOptionError(f"--dtype: expected one of {', '.join(DTYPES)}, got {dtype!r}")
        dtype = DTYPES[dtype]
    for name, value in (("--seq-len", max_length or 1), ("--batch-size", batch_size), ("--samples", max_samples or 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise LoadOptionError(f"{name}: expected a positive integer, got {value!r}")
    try:
        with quiet_libraries():
            from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer
    except ImportError:
        raise WorkloadError("loading a Hugging Face model needs transformers: pip install 'mpq-planner[hf]'") from None
    path = resolve_model_path(path)
    if calib is None:
        raise WorkloadError(f"Hugging Face model {str(path)!r} needs calibration text: give --calib FILE ({CALIB_FORMATS})")
    samples = read_calibration_text(calib, max_samples, calib_field)
    kw = {"local_files_only": True, "trust_remote_code": trust_remote_code}
    with quiet_libraries():
        try:
            config = AutoConfig.from_pretrained(path, **kw)
        except (OSError, ValueError, KeyError) as e:
            raise WorkloadError(f"cannot load the config of {str(path)!r} (unsupported or custom architecture? "
                                 f"--trust-remote-code runs the model's own code): {e}") from None
        try:
            tokenizer = AutoTokenizer.from_pretrained(path, **kw)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise WorkloadError(f"cannot load the tokenizer of {str(path)!r}: {e}") from None
        causal = _is_causal_lm(config)
        cls = AutoModelForCausalLM if causal else AutoModel
        try:
            model = cls.from_pretrained(path, dtype=dtype, **kw)
        except (OSError, ValueError, KeyError, RuntimeError) as e:
            raise WorkloadError(f"cannot load the model weights of {str(path)!r} ({config.model_type}): {e}") from None
    limit = _max_positions(config)
    if max_length is None:  # the default, within what the model supports
        max_length = min(DEFAULT_MAX_LENGTH, limit or DEFAULT_MAX_LENGTH)
    elif limit is not None and max_length > limit:
        raise LoadOptionError(f"--seq-len {max_length} is beyond the {limit} positions model {str(path)!r} ({config.model_type}) supports")
    from mpq.sensitivity._runtime import check_device

    dev = check_device(device)
    model.to(dev)
    model.eval()
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise WorkloadError(f"the tokenizer of {str(path)!r} has neither a pad nor an eos token to pad batches with")
        tokenizer.pad_token = tokenizer.eos_token

    batches = []
    for group in length_groups(tokenizer, samples, batch_size, max_length):
        enc = tokenizer([samples[i] for i in group], return_tensors="pt", padding=True, truncation=True, max_length=max_length)
        inputs = {"input_ids": enc["input_ids"].to(dev), "attention_mask": enc["attention_mask"].to(dev)}
        if causal:
            labels = inputs["input_ids"].clone()
            labels[inputs["attention_mask"] == 0] = -100
            batches.append((inputs, labels))
        else:
            with torch.no_grad():
                hidden = _hidden(model(**inputs)).detach().float()
            batches.append((inputs, {"hidden": hidden, "mask": inputs["attention_mask"]}))

    tied = []
    out_emb, in_emb = model.get_output_embeddings() if causal else None, model.get_input_embeddings()
    if out_emb is not None and in_emb is not None and out_emb.weight is in_emb.weight:
        names = {id(m): n for n, m in model.named_modules()}
        tied.append([names[id(in_emb)], names[id(out_emb)]])
    meta = {
        "hf_path": str(path), "model_type": config.model_type, "causal_lm": causal,
        "loss": "lm-cross-entropy" if causal else "self-distillation-mse",
        "zero_gradient_at_full_precision": not causal, "tied": tied, "samples": len(samples),
        "seq_len": max_length, "dtype": str(dtype).removeprefix("torch."), "batching": "samples grouped by token length",
    }
    sampling = TargetSampling(sample_lm_labels, lm_loss) if causal else TargetSampling(sample_cotangent, cotangent_loss)
    return Workload(model=model, batches=batches, loss_fn=lm_loss if causal else distillation_loss, name=str(path), meta=meta,
                    sampling=sampling)
