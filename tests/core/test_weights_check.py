"""Files that claim more than they hold, and configs that ask for absurd models, are refused in
plain words before anything is allocated or hashed (ds_core.models.weights_check): in the loader,
the CLI and content_hash (what Home runs on every directory)."""

from __future__ import annotations

import json
import struct
import time

import pytest
from conftest import assert_clean_cli_error

import ds_core.models.weights_check as W
from ds_core.cli import main
from ds_core.models.checkpoint import Card, CheckpointError, content_hash, load_checkpoint, save_checkpoint
from ds_core.models.model import init_model


@pytest.fixture
def ck(tmp_path, char_tokenizer):
    d = tmp_path / "ck"
    save_checkpoint(d, init_model(char_tokenizer, "llama", hidden=32, layers=1, heads=2), char_tokenizer, Card("c"))
    return d


def _write_safetensors(path, tensors: dict, pad_to: int | None = None, body: bytes = b""):
    header = json.dumps(tensors).encode()
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(header)) + header + body)
        if pad_to is not None:
            fh.truncate(pad_to)  # sparse: no disk used


def _refused(path, *words, capsys=None, hashed=True):
    t0 = time.perf_counter()
    with pytest.raises(CheckpointError) as ei:
        load_checkpoint(path)
    for w in words:
        assert w in str(ei.value), str(ei.value)
    if hashed:
        with pytest.raises(CheckpointError):
            content_hash(path)
    assert time.perf_counter() - t0 < 5, "refused only after reading the file"
    if capsys is not None:
        rc = main(["eval", "--checkpoint", str(path), "--sizes", "1x1", "--n", "1", "--no-store"])
        out, err = capsys.readouterr()
        assert_clean_cli_error(rc, out, err, words[0])


def test_a_header_that_claims_tens_of_gigabytes(ck, capsys):
    big = {"model.embed_tokens.weight": {"dtype": "F32", "shape": [100_000, 100_000], "data_offsets": [0, 4 * 10**10]}}
    _write_safetensors(ck / "model.safetensors", big, body=b"\0" * 64)
    _refused(ck / "", "claims 37.3 GiB of tensor data and the file holds", capsys=capsys)


def test_a_file_far_bigger_than_its_header(ck, capsys):
    """A valid file extended to 50 GB (sparse): hashing it would read 50 GB; it is refused at once."""
    f = ck / "model.safetensors"
    with open(f, "r+b") as fh:
        fh.truncate(50 * 2**30)
    _refused(ck, "more than its header describes", capsys=capsys)


@pytest.mark.parametrize(
    "tensors,words",
    [
        ({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 8]}}, "needs 16 bytes but the header gives it 8"),
        ({"w": {"dtype": "F99", "shape": [4], "data_offsets": [0, 16]}}, "not a tensor description"),
        ({"w": {"shape": [4]}}, "not a tensor description"),
        ({"w": {"dtype": "F32", "shape": [-4], "data_offsets": [0, 16]}}, "not a tensor description"),
    ],
)
def test_headers_that_do_not_describe_tensors(ck, tensors, words):
    _write_safetensors(ck / "model.safetensors", tensors, body=b"\0" * 16)
    _refused(ck, words)


def test_a_header_length_beyond_the_file(ck):
    (ck / "model.safetensors").write_bytes(struct.pack("<Q", 10**15) + b"{}")
    _refused(ck, "claims a header of 1,000,000,000,000,000 bytes")


def test_weights_bigger_than_the_machines_memory(ck, monkeypatch, capsys):
    monkeypatch.setattr(W, "machine_memory", lambda: 2**12)  # a 4 KiB machine
    # (content_hash remembers the hash save_checkpoint computed on the real machine)
    _refused(ck, "of memory to load and this machine has 4.0 KiB", capsys=capsys, hashed=False)
    # the real machine: a consistent 2x-its-memory file (sparse) is refused the same way
    monkeypatch.undo()
    have = W.machine_memory()
    if not have:
        pytest.skip("this machine does not report its memory")
    n = 2 * have // 4
    big = {"model.embed_tokens.weight": {"dtype": "F32", "shape": [n], "data_offsets": [0, 4 * n]}}
    header = json.dumps(big).encode()
    _write_safetensors(ck / "model.safetensors", big, pad_to=8 + len(header) + 4 * n)
    _refused(ck, "of memory to load")


@pytest.mark.parametrize(
    "change,words",
    [
        ({"num_hidden_layers": 10**7}, "num_hidden_layers = 10,000,000, beyond any real model"),
        ({"vocab_size": 10**9}, "vocab_size = 1,000,000,000"),
        ({"num_hidden_layers": 1000}, "asks for 1,000 layers (num_hidden_layers) but the weights hold 1"),
        ({"vocab_size": 5000}, "vocab_size is 5,000 but the weights' embedding has 101 rows"),
        ({"hidden_size": "wide"}, "hidden_size is 'wide'"),
    ],
)
def test_configs_that_ask_for_absurd_models(ck, change, words, capsys):
    cfg = json.loads((ck / "config.json").read_text())
    (ck / "config.json").write_text(json.dumps(cfg | change))
    t0 = time.perf_counter()
    with pytest.raises(CheckpointError, match=words.replace("(", r"\(").replace(")", r"\)")):
        load_checkpoint(ck)
    assert time.perf_counter() - t0 < 5
    rc = main(["eval", "--checkpoint", str(ck), "--sizes", "1x1", "--n", "1", "--no-store"])
    out, err = capsys.readouterr()
    assert_clean_cli_error(rc, out, err, words.split()[0])


def test_real_checkpoints_pass(ck):
    claims = W.check_weights(sorted(ck.glob("*.safetensors")))
    assert claims[0].n_tensors > 0 and claims[0].numel > 0
    W.check_config(json.loads((ck / "config.json").read_text()), claims)
    load_checkpoint(ck)
