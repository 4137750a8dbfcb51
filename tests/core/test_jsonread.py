"""One JSON reader (ds_core.store.jsonread) for everything read from outside the store: size and
depth bounded before parsing, duplicate keys rejected, the top-level shape checked; and the
checkpoint loader and the CLI use it (a deep config.json is one error line, not a RecursionError)."""

from __future__ import annotations

import json

import pytest
from conftest import assert_clean_cli_error

from ds_core.cli import main
from ds_core.models.checkpoint import Card, CheckpointError, load_checkpoint, read_card, save_checkpoint
from ds_core.models.model import init_model
from ds_core.store import jsonread as J

DEEP = "[" * 100_000 + "]" * 100_000


def test_depth_is_counted_outside_strings():
    assert J.depth_of(b'{"a": [1, {"b": "[[[[{{"}], "c": "\\"{"}') == 3
    assert J.depth_of(b"3") == 0 and J.depth_of(b"[[]]") == 2
    assert J.loads('{"a": "]]]]"}') == {"a": "]]]]"}
    nested = "[" * J.MAX_DEPTH + "]" * J.MAX_DEPTH
    assert J.loads(nested) == json.loads(nested)  # at the limit: read
    with pytest.raises(J.JSONReadError, match="nested 65 levels deep; the limit is 64"):
        J.loads("[" + nested + "]", "x.json")
    with pytest.raises(J.JSONReadError, match="nested 100,000 levels"):
        J.loads(DEEP, "x.json")


@pytest.mark.parametrize(
    "text,words",
    [
        ('{"a": 1, "a": 2}', "'a' appears twice"),
        ('{"x": {"prompt": "1*2", "prompt": "3*4"}}', "'prompt' appears twice"),
        ('[{"k": 1}, {"k": 1, "k": 1}]', "'k' appears twice"),
        ("{not json", "not valid JSON"),
        ('{"a": 1} trailing', "not valid JSON"),
        (b"\xff\xfe{}", "not UTF-8"),
    ],
)
def test_ambiguous_and_malformed(text, words):
    with pytest.raises(J.JSONReadError, match=words):
        J.loads(text, "the file")


def test_size_and_shape(tmp_path):
    with pytest.raises(J.JSONReadError, match="bytes; the limit is 10"):
        J.loads('{"a": "' + "x" * 20 + '"}', "f", max_bytes=10)
    big = tmp_path / "big.json"
    with open(big, "wb") as fh:  # a sparse file: its size is checked before a byte is read
        fh.truncate(200 * 1024 * 1024)
    with pytest.raises(J.JSONReadError, match="bytes; the limit"):
        J.read(big)
    with pytest.raises(J.JSONReadError, match="holds an array; expected a JSON object"):
        J.loads("[1]", "f", expect=dict)
    with pytest.raises(J.JSONReadError, match="cannot be read"):
        J.read(tmp_path / "missing.json")
    assert J.loads(b'\xef\xbb\xbf{"bom": true}') == {"bom": True}
    assert J.loads('{"n": NaN}')["n"] != J.loads('{"n": NaN}')["n"]  # NaN stays NaN (json's reading)


@pytest.fixture
def ckpt_dir(tmp_path, char_tokenizer):
    d = tmp_path / "ck"
    save_checkpoint(d, init_model(char_tokenizer, "llama", hidden=32, layers=1, heads=2), char_tokenizer, Card("c"))
    return d


@pytest.mark.parametrize(
    "name,content,words",
    [
        ("config.json", DEEP, "nested"),
        ("config.json", '{"model_type": "llama", "model_type": "gpt2"}', "appears twice"),
        ("generation_config.json", DEEP, "generation_config.json"),
        ("tokenizer_config.json", '{"a": 1, "a": 1}', "appears twice"),
        ("card.json", DEEP, "nested"),
    ],
)
def test_checkpoint_files_go_through_the_reader(ckpt_dir, name, content, words, capsys):
    (ckpt_dir / name).write_text(content)
    with pytest.raises(CheckpointError, match=words):
        load_checkpoint(ckpt_dir)
    if name == "card.json":
        with pytest.raises(CheckpointError, match="not a valid card"):
            read_card(ckpt_dir)
    rc = main(["eval", "--checkpoint", str(ckpt_dir), "--sizes", "1x1", "--n", "1", "--no-store"])
    out, err = capsys.readouterr()
    assert_clean_cli_error(rc, out, err, words.split()[0])
