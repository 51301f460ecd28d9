"""Tiny random-init Hugging Face models and a word-level tokenizer, built in code and saved to disk."""
from __future__ import annotations

from pathlib import Path

import torch

SENTENCES = [
    "the quick brown fox jumps over the lazy dog",
    "a small model learns to count bits",
    "mixed precision keeps the sensitive layers wide",
    "every layer gets its own number of bits",
    "the plan fits the budget and the model still works",
    "quantized weights take less memory than float weights",
]


def make_tokenizer(bos_eos: bool = True):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    special = ["[PAD]", "[UNK]", "[BOS]", "[EOS]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(SENTENCES, trainers.WordLevelTrainer(special_tokens=special))
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", bos_token="[BOS]", eos_token="[EOS]",
        cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
    )


def save_tiny(kind: str, root: Path) -> Path:
    """``kind`` in llama, bert, gpt2; returns the saved model directory."""
    from transformers import BertConfig, BertModel, GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tokenizer = make_tokenizer()
    vocab = -(-len(tokenizer) // 32) * 32  # rows in multiples of 32, as AutoRound needs to quantize lm_head
    if kind == "llama":
        # rows of 256 and 512 inputs: llama.cpp k-quants need row lengths that are multiples of 256
        config = LlamaConfig(vocab_size=vocab, hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
                             num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=False,
                             pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
        model = LlamaForCausalLM(config)
    elif kind == "bert":
        config = BertConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                            max_position_embeddings=64, pad_token_id=tokenizer.pad_token_id)
        model = BertModel(config)
    elif kind == "gpt2":
        config = GPT2Config(vocab_size=vocab, n_embd=32, n_layer=2, n_head=2, n_positions=64,
                            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
        model = GPT2LMHeadModel(config)
    else:
        raise ValueError(kind)
    path = root / kind
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def write_calib(root: Path) -> Path:
    path = root / "calib.txt"
    path.write_text("\n".join(SENTENCES) + "\n")
    return path


import pytest


@pytest.fixture(scope="session")
def tiny_hf(tmp_path_factory):
    """Directories of tiny random-init Llama, BERT and GPT-2 models plus a calibration file (built once per run)."""
    pytest.importorskip("transformers")
    root = tmp_path_factory.mktemp("hf")
    return {"llama": save_tiny("llama", root), "bert": save_tiny("bert", root), "gpt2": save_tiny("gpt2", root), "calib": write_calib(root)}
