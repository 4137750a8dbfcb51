"""Tiny causal LMs for DS-Lens: ordinary transformers models (Llama / Qwen2 / GPT-2 configs).

Nothing in ds_core depends on these being ours: a checkpoint is any `AutoModelForCausalLM`.
"""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig, Qwen2Config

ARCHS = ("llama", "qwen2", "gpt2")


def tiny_config(
    tokenizer,
    arch: str = "llama",
    hidden: int = 128,
    layers: int = 4,
    heads: int = 4,
    intermediate: int | None = None,
    max_positions: int = 1024,
):
    """A small config sized for the tokenizer (about 0.8M parameters at the defaults)."""
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {ARCHS}")
    vocab = len(tokenizer)
    common = dict(
        vocab_size=vocab,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    if arch == "gpt2":
        return GPT2Config(
            n_embd=hidden,
            n_layer=layers,
            n_head=heads,
            n_positions=max_positions,
            n_inner=intermediate or 4 * hidden,
            **common,
        )
    cls = LlamaConfig if arch == "llama" else Qwen2Config
    return cls(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        intermediate_size=intermediate or 4 * hidden,
        max_position_embeddings=max_positions,
        tie_word_embeddings=True,
        rope_theta=10000.0,
        **common,
    )


def init_model(tokenizer, arch: str = "llama", seed: int = 0, **kw):
    """A randomly initialised causal LM (seeded) for the given tokenizer."""
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(tokenizer, arch, **kw))
    model.eval()
    return model


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def context_length(model) -> int:
    cfg = model.config
    for attr in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        v = getattr(cfg, attr, None)
        if isinstance(v, int) and v > 0:
            return v
    return 2048
