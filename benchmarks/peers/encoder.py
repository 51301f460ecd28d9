"""A sentence encoder and its calibration batches, built the same way for every peer (transformers + torch only)."""
from __future__ import annotations

import torch


def load_encoder(model_dir: str):
    """The encoder without its pooler (sentence-transformers pools the last hidden state itself), in eval mode."""
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    model = AutoModel.from_pretrained(model_dir, local_files_only=True, attn_implementation="eager")
    if getattr(model, "pooler", None) is not None:
        model.pooler = None
    return model.eval(), tokenizer


def batches(tokenizer, texts: list[str], batch_size: int, seq_len: int) -> list[dict]:
    out = []
    for i in range(0, len(texts), batch_size):
        enc = tokenizer(texts[i:i + batch_size], return_tensors="pt", padding=True, truncation=True, max_length=seq_len)
        out.append({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]})
    return out


def target_layers(model, pattern: str = "encoder.") -> list[str]:
    """The encoder's Linear layers: what every method plans (embeddings stay in float for all of them)."""
    return [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and n.startswith(pattern)]


def sampled_target_loss(hidden: torch.Tensor, batch: dict, teacher: torch.Tensor, seed: int) -> torch.Tensor:
    """MSE to the full-precision hidden state plus Gaussian noise of its own scale, over real tokens.

    An MSE to the model's own output has zero gradient at full precision; with targets sampled around
    it the gradient is a Monte-Carlo sample of the Gauss-Newton direction, which gradient scores need.
    """
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(teacher.shape, generator=gen) * teacher.std()
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    return (((hidden - (teacher + noise)) ** 2) * mask).sum() / mask.sum() / hidden.shape[-1]
