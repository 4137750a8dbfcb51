"""Shared fixtures: DS-Lens' char-level tokenizer and a small byte-level BPE tokenizer built in code.

Nothing here downloads anything: the BPE tokenizer is trained in a fraction of a second on
generated English-ish arithmetic text, so tests can exercise code paths meant for "any other
causal LM" (TextFormat, LexicalMarkerTagger, token_char_spans) on a tokenizer that is *not*
char-level: tokens carry a leading space ("Ġtimes"), markers straddle token boundaries, and
non-ASCII characters are split into several byte tokens.
"""

from __future__ import annotations

import random

import pytest


@pytest.fixture(scope="session", autouse=True)
def _torch_one_thread():
    """Tiny models run fastest on one thread, and CI's two cores are not oversubscribed."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def assert_clean_cli_error(rc: int, out: str, err: str, word: str) -> None:
    """A user error in the CLI: exit 2, nothing on stdout, one 'error:' line naming `word`."""
    assert rc == 2
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert word.lower() in lines[0].lower(), lines[0]
    assert out == ""


BPE_EOS, BPE_PAD, BPE_BOS = "<|endoftext|>", "<|pad|>", "<|bos|>"


def bpe_training_lines(n: int = 400, seed: int = 0) -> list[str]:
    """A few hundred lines of generated reasoning-trace-like English with the paper's markers."""
    r = random.Random(seed)
    subjects = ["I", "We", "The model", "She", "They", "So I"]
    verbs = ["think", "compute", "check", "multiply", "add", "write", "recompute", "verify"]
    fillers = [
        "the answer is",
        "the product is",
        "so the total is",
        "which gives",
        "and then",
        "the result is",
        "that makes",
    ]
    markers = [
        "Let me recompute.",
        "I made a mistake.",
        "I'll go back and check.",
        "Wait,",
        "Waiting for it,",
        "wait",
        "let me recompute",
        "Hmm,",
        "Done.",
    ]
    lines = []
    for _ in range(n):
        a, b = r.randint(1, 9999), r.randint(1, 999)
        op, word, val = ("*", "times", a * b) if r.random() < 0.7 else ("+", "plus", a + b)
        parts = [
            f"Question: What is {a} {word} {b}? Answer:",
            r.choice(subjects),
            r.choice(verbs),
            f"{a} {op} {b},",
            r.choice(fillers),
            f"{val + r.choice([0, 0, 10, -1]):,}.",
        ]
        if r.random() < 0.5:
            parts += [r.choice(markers), f"{a} {word} {b} is {val}."]
        lines.append(" ".join(parts))
    return lines


def build_bpe_tokenizer(vocab_size: int = 400):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        show_progress=False,
        special_tokens=[BPE_EOS, BPE_PAD, BPE_BOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    core.train_from_iterator(bpe_training_lines(), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=core, eos_token=BPE_EOS, pad_token=BPE_PAD, bos_token=BPE_BOS)


@pytest.fixture(scope="session")
def bpe_tokenizer():
    """A byte-level BPE `PreTrainedTokenizerFast` (not char-level, no [STOP]/[RESAMPLE] tokens).

    eos = '<|endoftext|>', pad = '<|pad|>' (distinct from eos), bos = '<|bos|>'. Do not mutate it.
    """
    return build_bpe_tokenizer()


CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(scope="session")
def chat_tokenizer():
    """The BPE tokenizer as a chat model's: ChatML template, <|im_start|>/<|im_end|> special tokens
    and <|im_end|> as eos (like SmolLM2 and Qwen2.5-Instruct). Do not mutate it."""
    tok = build_bpe_tokenizer()
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tok.chat_template = CHATML
    return tok


@pytest.fixture(scope="session")
def char_tokenizer():
    """DS-Lens' own char-level tokenizer (ds_core.episodes.tokenizer.build_tokenizer()). Do not mutate it."""
    from ds_core.episodes.tokenizer import build_tokenizer

    return build_tokenizer()


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    """A fresh results store for the app under test (ui.common keys its store by DS_LENS_DATA)."""
    monkeypatch.setenv("DS_LENS_DATA", str(tmp_path / "data"))
    return tmp_path / "data"
