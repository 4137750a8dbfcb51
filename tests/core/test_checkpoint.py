"""Checkpoint I/O: save/load round trips, content hashes, architectures, and every refusal.

Models are tiny (hidden 32, 2 layers: tens of thousands of parameters) so the whole file runs in a
few seconds on one CPU thread.
"""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from ds_core.episodes.formats import DSFormat, TextFormat
from ds_core.models.checkpoint import (
    Card,
    Checkpoint,
    CheckpointError,
    content_hash,
    find_checkpoints,
    load_checkpoint,
    read_card,
    save_checkpoint,
)
from ds_core.models.locks import MODEL_LOCK
from ds_core.models.model import init_model, tiny_config

REPO = Path(__file__).resolve().parents[2]

TINY = dict(hidden=32, layers=2, heads=2)


@pytest.fixture(scope="module")
def tok(char_tokenizer):
    return char_tokenizer


@pytest.fixture(scope="module")
def llama(tok):
    return init_model(tok, "llama", seed=0, **TINY)


def _card(**kw) -> Card:
    base = dict(
        condition="sft",
        seed=3,
        training={"lr": 1e-3, "steps": 10, "sizes": ["3x3", "3x4"]},
        data_recipe={"mix": "uniform", "n": 1000},
        metrics={"acc": 0.5},
        parent="checkpoints/base",
        wall_time_s=12.5,
        notes="a tiny test model",
    )
    base.update(kw)
    return Card(**base)


@pytest.fixture
def saved(tmp_path, llama, tok) -> Path:
    d = tmp_path / "ckpt"
    save_checkpoint(d, llama, tok, _card())
    return d


def _expect_error(path, *words) -> CheckpointError:
    with pytest.raises(CheckpointError) as ei:
        load_checkpoint(path)
    msg = str(ei.value)
    for w in words:
        assert w.lower() in msg.lower(), f"{w!r} not in error message {msg!r}"
    return ei.value


def _rewrite_weights(d: Path, change) -> None:
    f = d / "model.safetensors"
    sd = load_file(str(f))
    change(sd)
    save_file(sd, str(f), metadata={"format": "pt"})


# --- round trip ----------------------------------------------------------------------------------
def test_round_trip_weights_tokenizer_card(saved, llama, tok):
    ck = load_checkpoint(saved)
    assert isinstance(ck, Checkpoint)
    assert ck.path == saved and ck.arch == "llama" and ck.name == "sft"
    # weights: every tensor equal
    want, got = llama.state_dict(), ck.model.state_dict()
    assert set(want) == set(got)
    for k in want:
        assert torch.equal(want[k], got[k]), k
    assert not ck.model.training, "a loaded model is in eval mode"
    # tokenizer: same vocabulary, same ids for a DS trace, same special tokens
    assert ck.tokenizer.get_vocab() == tok.get_vocab()
    text = "<bos>321*7654=3:10731;2:04319+140501[RESAMPLE]=147165#356*7404>6,153416[STOP]<eos>"
    assert ck.tokenizer(text, add_special_tokens=False)["input_ids"] == tok(text, add_special_tokens=False)["input_ids"]
    for attr in ("bos_token_id", "eos_token_id", "pad_token_id", "unk_token_id"):
        assert getattr(ck.tokenizer, attr) == getattr(tok, attr), attr
    # card: every field equal
    assert ck.card == _card(code_version=ck.card.code_version, created=ck.card.created)
    assert ck.card.to_dict() == read_card(saved).to_dict()
    assert isinstance(ck.format, DSFormat)
    # same outputs
    x = torch.tensor([tok("<bos>123*456=", add_special_tokens=False)["input_ids"]])
    with torch.no_grad(), MODEL_LOCK:  # loaded models run under the lock (ds_core.models.locks)
        assert torch.allclose(llama(input_ids=x).logits, ck.model(input_ids=x).logits, atol=1e-6)


def test_save_writes_no_pickles(saved):
    names = {p.name for p in saved.iterdir()}
    assert {"config.json", "model.safetensors", "card.json"} <= names
    assert not [n for n in names if n.endswith((".bin", ".pt", ".pth", ".ckpt", ".pkl"))]


def test_content_hash_stable_and_content_based(saved, tmp_path, llama, tok):
    h = load_checkpoint(saved).hash
    assert len(h) == 16 and int(h, 16) >= 0
    assert load_checkpoint(saved).hash == h == content_hash(saved)
    # saving the same model and tokenizer again gives the same hash, whatever the card says
    assert save_checkpoint(tmp_path / "again", llama, tok, _card(condition="other", seed=9)) == h
    # a copy elsewhere has the same hash (the hash is of content, not of the path)
    copy = tmp_path / "copy"
    shutil.copytree(saved, copy)
    assert content_hash(copy) == h


def test_content_hash_ignores_card(saved):
    h = content_hash(saved)
    (saved / "card.json").write_text(json.dumps(_card(condition="rl", notes="edited").to_dict()))
    ck = load_checkpoint(saved)
    assert ck.card.condition == "rl" and ck.name == "rl"
    assert ck.hash == h


def test_content_hash_changes_with_one_weight(saved):
    h = content_hash(saved)

    def bump(sd):
        k = "model.layers.0.self_attn.q_proj.weight"
        sd[k] = sd[k].clone()
        sd[k][0, 0] += 1.0

    _rewrite_weights(saved, bump)
    h2 = content_hash(saved)
    assert h2 != h
    assert load_checkpoint(saved).hash == h2


def test_content_hash_changes_with_config(saved):
    h = content_hash(saved)
    cfg = json.loads((saved / "config.json").read_text())
    cfg["rms_norm_eps"] = 1e-5 if cfg.get("rms_norm_eps") != 1e-5 else 1e-6
    (saved / "config.json").write_text(json.dumps(cfg))
    assert content_hash(saved) != h


# --- architectures and other checkpoints -------------------------------------------------------------
@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2"])
def test_loads_each_architecture(tmp_path, tok, arch):
    model = init_model(tok, arch, seed=1, **TINY)
    h = save_checkpoint(tmp_path / arch, model, tok, Card(condition=f"c-{arch}"))
    ck = load_checkpoint(tmp_path / arch)
    assert ck.arch == arch and ck.hash == h and ck.name == f"c-{arch}"
    assert ck.model.get_input_embeddings().num_embeddings == len(tok)
    for k, v in model.state_dict().items():
        assert torch.equal(v, ck.model.state_dict()[k]), k
    assert isinstance(ck.format, DSFormat)


def test_plain_hf_directory_without_card(tmp_path, tok, llama):
    d = tmp_path / "plain-model"
    llama.save_pretrained(str(d))
    tok.save_pretrained(str(d))
    assert not (d / "card.json").exists()
    ck = load_checkpoint(d)
    assert ck.card is None
    assert ck.name == "plain-model"
    assert isinstance(ck.format, DSFormat)
    for k, v in llama.state_dict().items():
        assert torch.equal(v, ck.model.state_dict()[k]), k


def test_bpe_tokenizer_checkpoint_gets_text_format(tmp_path, bpe_tokenizer):
    model = init_model(bpe_tokenizer, "llama", seed=0, **TINY)
    d = tmp_path / "bpe"
    save_checkpoint(d, model, bpe_tokenizer, Card(condition="bpe"))
    ck = load_checkpoint(d)
    assert isinstance(ck.format, TextFormat)
    assert len(ck.tokenizer) == len(bpe_tokenizer)
    assert ck.tokenizer.get_vocab() == bpe_tokenizer.get_vocab()
    assert ck.tokenizer.eos_token_id == bpe_tokenizer.eos_token_id
    assert ck.tokenizer.pad_token_id == bpe_tokenizer.pad_token_id != ck.tokenizer.eos_token_id
    text = "Question: What is 123 times 45? Answer: Let me recompute. 5,535."
    assert ck.tokenizer(text)["input_ids"] == bpe_tokenizer(text)["input_ids"]


def test_embedding_larger_than_tokenizer_is_fine(tmp_path, tok):
    from transformers import AutoModelForCausalLM

    cfg = tiny_config(tok, "llama", **TINY)
    cfg.vocab_size = len(tok) + 29  # padded vocabulary, as many real checkpoints have
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg)
    save_checkpoint(tmp_path / "padded", model, tok, Card(condition="padded"))
    ck = load_checkpoint(tmp_path / "padded")
    assert ck.model.get_input_embeddings().num_embeddings == len(tok) + 29


# --- refusals ------------------------------------------------------------------------------------------
def test_missing_path(tmp_path):
    _expect_error(tmp_path / "nope", "does not exist")


def test_path_is_a_file(tmp_path):
    f = tmp_path / "model.safetensors"
    f.write_bytes(b"x")
    _expect_error(f, "not a directory")


def test_no_config_json(saved):
    (saved / "config.json").unlink()
    _expect_error(saved, "no config.json")


def test_empty_directory(tmp_path):
    (tmp_path / "empty").mkdir()
    _expect_error(tmp_path / "empty", "config.json")


@pytest.mark.parametrize(
    "content,words",
    [
        ("{not json", ("not valid json",)),
        ('["a", "list"]', ("json object",)),
        (b"\xff\xfe\x00garbage", ("not valid json",)),
    ],
)
def test_invalid_config_json(saved, content, words):
    f = saved / "config.json"
    f.write_bytes(content if isinstance(content, bytes) else content.encode())
    _expect_error(saved, "config.json", *words)


def test_unknown_model_type(saved):
    cfg = json.loads((saved / "config.json").read_text())
    cfg["model_type"] = "definitely-not-a-model"
    cfg["architectures"] = ["DefinitelyNotAModel"]
    (saved / "config.json").write_text(json.dumps(cfg))
    _expect_error(saved, "cannot be loaded")


def test_remote_code_refused(saved, monkeypatch):
    cfg = json.loads((saved / "config.json").read_text())
    cfg["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilModel"}
    (saved / "config.json").write_text(json.dumps(cfg))
    (saved / "modeling_evil.py").write_text("raise SystemExit('remote code ran')\n")
    import transformers

    monkeypatch.setattr(
        transformers.AutoModelForCausalLM,
        "from_pretrained",
        lambda *a, **k: pytest.fail("from_pretrained must not be reached"),
    )
    _expect_error(saved, "auto_map", "custom code", "trust_remote_code")


class _Boom:
    """Unpickling this creates a sentinel file: proof that a pickle was loaded."""

    sentinel = ""

    def __reduce__(self):
        return (open, (self.sentinel, "w"))


def _pickle_only_dir(tmp_path, llama, tok) -> Path:
    d = tmp_path / "pickled"
    d.mkdir()
    llama.config.save_pretrained(str(d))
    tok.save_pretrained(str(d))
    torch.save(llama.state_dict(), d / "pytorch_model.bin")
    return d


def test_pickle_only_refused_without_unpickling(tmp_path, llama, tok, monkeypatch):
    d = _pickle_only_dir(tmp_path, llama, tok)

    def no_unpickling(*a, **k):
        pytest.fail("the loader unpickled a file")

    monkeypatch.setattr(torch, "load", no_unpickling)
    monkeypatch.setattr(torch.serialization, "load", no_unpickling)
    monkeypatch.setattr(pickle, "load", no_unpickling)
    monkeypatch.setattr(pickle, "loads", no_unpickling)
    monkeypatch.setattr(pickle, "Unpickler", no_unpickling)
    err = _expect_error(d, "pytorch_model.bin", "pickle", "safetensors")
    assert "save_pretrained" in str(err)  # says what to do


def test_malicious_pickle_never_runs(tmp_path, llama, tok):
    d = _pickle_only_dir(tmp_path, llama, tok)
    sentinel = tmp_path / "PWNED"
    _Boom.sentinel = str(sentinel)
    (d / "pytorch_model.bin").write_bytes(pickle.dumps(_Boom()))
    (d / "extra.pt").write_bytes(pickle.dumps(_Boom()))
    _expect_error(d, "pickle")
    assert not sentinel.exists()


def test_no_weights_at_all(tmp_path, llama, tok):
    d = tmp_path / "noweights"
    d.mkdir()
    llama.config.save_pretrained(str(d))
    tok.save_pretrained(str(d))
    _expect_error(d, "no weights")


def test_corrupt_safetensors(saved):
    (saved / "model.safetensors").write_bytes(b"\x00garbage bytes, not a safetensors file" * 50)
    _expect_error(saved, "model.safetensors", "not a valid safetensors")


def test_truncated_safetensors(saved):
    f = saved / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])
    _expect_error(saved, "model.safetensors", "corrupt or truncated")


def test_empty_safetensors(saved):
    (saved / "model.safetensors").write_bytes(b"")
    _expect_error(saved, "model.safetensors", "not a valid safetensors")


def test_missing_tokenizer(tmp_path, llama):
    d = tmp_path / "notok"
    llama.save_pretrained(str(d))
    _expect_error(d, "no tokenizer")


def test_unreadable_tokenizer(saved):
    (saved / "tokenizer.json").write_text("{this is not a tokenizer")
    _expect_error(saved, "tokenizer", "cannot be loaded")


def test_tokenizer_larger_than_embedding(tmp_path, tok):
    from transformers import AutoModelForCausalLM

    cfg = tiny_config(tok, "llama", **TINY)
    cfg.vocab_size = len(tok) - 10
    cfg.pad_token_id = cfg.bos_token_id = cfg.eos_token_id = 0
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg)
    save_checkpoint(tmp_path / "small-vocab", model, tok, Card(condition="x"))
    err = _expect_error(tmp_path / "small-vocab", "mismatch", str(len(tok)), str(len(tok) - 10))
    assert "tokenizer" in str(err)


@pytest.mark.parametrize("key", ["model.layers.1.mlp.up_proj.weight", "model.embed_tokens.weight", "model.norm.weight"])
def test_missing_tensors(saved, key):
    _rewrite_weights(saved, lambda sd: sd.pop(key))
    _expect_error(saved, "lacks weights", key)


def test_missing_untied_lm_head(tmp_path, tok):
    # Regression (was a bug, fixed): ds_core/models/checkpoint.py:210 (load_checkpoint) drops every missing key that
    # contains
    # "lm_head" from the completeness check, so a model with an *untied* output layer
    # (tie_word_embeddings=False, e.g. most real Qwen2/Llama checkpoints) whose safetensors lack
    # lm_head.weight loads silently with a randomly initialised lm_head. Expected: CheckpointError
    # ("lacks weights ... lm_head.weight"); got: a Checkpoint. (For tied models transformers does
    # not list lm_head.weight as missing, so the filter is not needed for them.)
    from transformers import AutoModelForCausalLM

    cfg = tiny_config(tok, "qwen2", **TINY)
    cfg.tie_word_embeddings = False
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg)
    d = tmp_path / "untied"
    save_checkpoint(d, model, tok, Card(condition="untied"))
    assert "lm_head.weight" in load_file(str(d / "model.safetensors"))
    _rewrite_weights(d, lambda sd: sd.pop("lm_head.weight"))
    _expect_error(d, "lm_head")


def test_tied_model_does_not_need_lm_head(saved):
    assert "lm_head.weight" not in load_file(str(saved / "model.safetensors"))
    ck = load_checkpoint(saved)
    assert torch.equal(ck.model.get_output_embeddings().weight, ck.model.get_input_embeddings().weight)


def test_invalid_card_json(saved):
    (saved / "card.json").write_text("{broken")
    _expect_error(saved, "card")
    (saved / "card.json").write_text(json.dumps({"seed": 1}))  # no condition
    _expect_error(saved, "card")
    (saved / "card.json").write_text(json.dumps({"condition": ""}))
    _expect_error(saved, "card", "condition")


def test_errors_are_value_errors():
    assert issubclass(CheckpointError, ValueError)


# --- discovery and cards -----------------------------------------------------------------------------
def test_find_checkpoints(tmp_path, saved):
    root = tmp_path / "root"
    root.mkdir()
    for name in ("b-model", "a-model"):
        (root / name).mkdir()
        (root / name / "config.json").write_text("{}")
    (root / "no-config").mkdir()
    (root / "no-config" / "model.safetensors").write_bytes(b"")
    (root / "config.json").write_text("{}")  # a file at the root is not a checkpoint directory
    (root / "file.txt").write_text("x")
    (root / "nested").mkdir()
    (root / "nested" / "deeper").mkdir()
    (root / "nested" / "deeper" / "config.json").write_text("{}")
    assert find_checkpoints(root) == [root / "a-model", root / "b-model"]
    assert find_checkpoints(tmp_path / "missing") == []
    assert find_checkpoints(root / "file.txt") == []
    (root / "config.json").unlink()
    assert find_checkpoints(tmp_path) == [saved]  # root itself has no config.json now


@pytest.mark.parametrize("bad", ["", "   ", "\n\t", None, 3])
def test_card_rejects_empty_condition(bad):
    with pytest.raises(ValueError, match="condition"):
        Card(condition=bad)


@pytest.mark.parametrize("field_name", ["training", "data_recipe", "metrics"])
def test_card_dict_fields_validated(field_name):
    with pytest.raises(ValueError, match=field_name):
        Card(condition="x", **{field_name: ["not", "a", "dict"]})


def test_card_from_dict_ignores_unknown_keys():
    c = Card.from_dict({"condition": "rl", "seed": 7, "future_field": {"x": 1}, "another": None})
    assert c.condition == "rl" and c.seed == 7
    assert not hasattr(c, "future_field")


def test_card_round_trip_and_defaults():
    c = _card()
    assert Card.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    d = Card(condition="base")
    assert d.seed == 0 and d.training == {} and d.parent is None and d.notes == ""
    assert d.code_version and d.created.endswith("Z")
    with pytest.raises(TypeError):
        Card.from_dict({"seed": 1})  # condition is required
