"""Tiny random-init Hugging Face models and a word-level tokenizer, built in code and saved to disk.

``ARCHITECTURES`` lists every kind :func:`save_tiny` builds: causal LMs (Llama, Qwen2, Qwen3,
Mistral, GPT-2, Phi), encoders (BERT, RoBERTa, DistilBERT, MPNet) and mixtures of experts as
transformers 5 writes them (Mixtral, Qwen2-MoE, Qwen3-MoE, with fused 3-D expert tensors).
"""
from __future__ import annotations

from pathlib import Path

import pytest

SENTENCES = [
    "the quick brown fox jumps over the lazy dog",
    "a small model learns to count bits",
    "mixed precision keeps the sensitive layers wide",
    "every layer gets its own number of bits",
    "the plan fits the budget and the model still works",
    "quantized weights take less memory than float weights",
]

CAUSAL = ("llama", "tiny_llama", "qwen2", "qwen3", "mistral", "gpt2", "phi")
ENCODERS = ("bert", "roberta", "distilbert", "mpnet")
MOE = ("mixtral", "qwen2_moe", "qwen3_moe")
ARCHITECTURES = CAUSAL + ENCODERS + MOE


def make_tokenizer(bos_eos: bool = True, byte_level: bool = False):
    """A word-level tokenizer; ``byte_level``: a byte-level BPE one, for model types whose tokenizer class
    transformers 5 forces (Qwen's) and which would read a word-level vocabulary as empty."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    special = ["[PAD]", "[UNK]", "[BOS]", "[EOS]", "[CLS]", "[SEP]", "[MASK]"]
    if byte_level:
        tok = Tokenizer(models.BPE(unk_token="[UNK]"))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        tok.train_from_iterator(SENTENCES, trainers.BpeTrainer(special_tokens=special, vocab_size=200,
                                                               initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    else:
        tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
        tok.pre_tokenizer = pre_tokenizers.Whitespace()
        tok.train_from_iterator(SENTENCES, trainers.WordLevelTrainer(special_tokens=special))
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", bos_token="[BOS]", eos_token="[EOS]",
        cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
    )


def _model(kind: str, vocab: int, tokenizer):
    import transformers as tf

    ids = dict(pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    small = dict(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                 max_position_embeddings=64)
    if kind == "llama":
        # rows of 256 and 512 inputs: llama.cpp k-quants need row lengths that are multiples of 256
        config = tf.LlamaConfig(vocab_size=vocab, hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
                                num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=False, **ids)
        return tf.LlamaForCausalLM(config)
    if kind == "tiny_llama":  # the Llama layout at the size of the others, for tests that run every estimator
        return tf.LlamaForCausalLM(tf.LlamaConfig(num_key_value_heads=1, tie_word_embeddings=False, **small, **ids))
    if kind == "qwen2":
        return tf.Qwen2ForCausalLM(tf.Qwen2Config(num_key_value_heads=1, tie_word_embeddings=False, **small, **ids))
    if kind == "qwen3":
        return tf.Qwen3ForCausalLM(tf.Qwen3Config(num_key_value_heads=1, head_dim=16, tie_word_embeddings=True, **small, **ids))
    if kind == "mistral":
        return tf.MistralForCausalLM(tf.MistralConfig(num_key_value_heads=1, tie_word_embeddings=False, **small, **ids))
    if kind == "phi":
        return tf.PhiForCausalLM(tf.PhiConfig(**small, **ids))
    if kind == "gpt2":
        return tf.GPT2LMHeadModel(tf.GPT2Config(vocab_size=vocab, n_embd=32, n_layer=2, n_head=2, n_positions=64,
                                                bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id))
    if kind == "bert":
        return tf.BertModel(tf.BertConfig(pad_token_id=tokenizer.pad_token_id, **small))
    if kind == "roberta":
        # RoBERTa's positions start after the padding index
        return tf.RobertaModel(tf.RobertaConfig(pad_token_id=tokenizer.pad_token_id, **{**small, "max_position_embeddings": 72}))
    if kind == "distilbert":
        return tf.DistilBertModel(tf.DistilBertConfig(vocab_size=vocab, dim=32, hidden_dim=64, n_layers=2, n_heads=2,
                                                      max_position_embeddings=64, pad_token_id=tokenizer.pad_token_id))
    if kind == "mpnet":
        return tf.MPNetModel(tf.MPNetConfig(pad_token_id=tokenizer.pad_token_id, **{**small, "max_position_embeddings": 72}))
    moe = dict(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
               max_position_embeddings=64, tie_word_embeddings=False, **ids)
    if kind == "mixtral":
        return tf.MixtralForCausalLM(tf.MixtralConfig(intermediate_size=64, num_local_experts=4, num_experts_per_tok=2, **moe))
    if kind == "qwen2_moe":
        return tf.Qwen2MoeForCausalLM(tf.Qwen2MoeConfig(intermediate_size=64, moe_intermediate_size=32, shared_expert_intermediate_size=32,
                                                        num_experts=4, num_experts_per_tok=2, **moe))
    if kind == "qwen3_moe":
        return tf.Qwen3MoeForCausalLM(tf.Qwen3MoeConfig(intermediate_size=64, moe_intermediate_size=32, head_dim=16,
                                                        num_experts=4, num_experts_per_tok=2, **moe))
    raise ValueError(f"unknown tiny architecture {kind!r}; known: {', '.join(ARCHITECTURES)}")


def save_tiny(kind: str, root: Path) -> Path:
    """Build the tiny random-init model ``kind`` (one of ``ARCHITECTURES``) with its tokenizer; returns the directory."""
    import torch

    torch.manual_seed(0)
    tokenizer = make_tokenizer(byte_level=kind.startswith("qwen"))
    vocab = -(-len(tokenizer) // 32) * 32  # rows in multiples of 32, as AutoRound needs to quantize lm_head
    model = _model(kind, vocab, tokenizer)
    path = root / kind
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def write_calib(root: Path) -> Path:
    path = root / "calib.txt"
    path.write_text("\n".join(SENTENCES) + "\n")
    return path


class _TinyDirs(dict):
    """Model directories by kind, each built on first use (a session builds only what its tests ask for)."""

    def __init__(self, root: Path):
        super().__init__(calib=write_calib(root))
        self.root = root

    def __missing__(self, kind: str) -> Path:
        self[kind] = save_tiny(kind, self.root)
        return self[kind]


@pytest.fixture(scope="session")
def tiny_hf(tmp_path_factory):
    """``tiny_hf[kind]``: the directory of a tiny random-init model of that kind (built once per run, on first use);
    ``tiny_hf["calib"]``: a calibration text file."""
    pytest.importorskip("transformers")
    return _TinyDirs(tmp_path_factory.mktemp("hf"))
