"""The Custom prompts page through Streamlit's AppTest: renders, runs, filters, good and bad uploads."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

REPO = Path(__file__).resolve().parents[2]
PAGE = str(REPO / "pages" / "3_Custom_prompts.py")
UPLOADS = Path(__file__).resolve().parents[1] / "data" / "uploads"


def _page() -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=120).run()
    assert not at.exception
    return at


def _downloads(at) -> list[str]:
    return [d.label for d in at.get("download_button")]


def _results(at):
    """The results table: the dataframe with a 'decision_share' column."""
    frames = [d.value for d in at.dataframe if "decision_share" in d.value.columns and "row" in d.value.columns]
    return frames[-1] if frames else None


def test_renders_with_defaults(data_dir):
    at = _page()
    assert at.title[0].value == "Custom prompts"
    assert "Upload" in at.file_uploader[0].label
    assert [b.label for b in at.button] == ["Run prompts"]
    text = " ".join(m.value for m in at.markdown)
    assert "pasted text" in text and "**5** will run" in text
    # the one default row that does not parse is listed with its reason
    errs = at.dataframe[0].value
    assert errs["row"].tolist() == [6] and "cannot read" in errs["error"].iloc[0]
    assert _results(at) is None


def test_run_filter_and_stale_settings(data_dir):
    at = _page()
    at.multiselect(key="cp_ckpts").set_value(["rl"]).run()
    at.button(key="cp_run").click().run()
    assert not at.exception and not at.error
    res = _results(at)
    assert len(res) == 5 and set(res["checkpoint"]) == {"rl"}
    assert res["row"].tolist() == [1, 2, 3, 4, 5]
    labels = _downloads(at)
    assert "Download results (CSV)" in labels
    assert any(lb.startswith("Download results (JSON") for lb in labels)
    n_wrong = int((~res["correct"]).sum())
    # the filter changes what is shown (and the CSV name says it is filtered)
    at.radio(key="cp_show").set_value("wrong answers").run()
    assert not at.exception
    shown = _results(at)
    assert len(shown) == n_wrong and not shown["correct"].any()
    if n_wrong < 5:
        assert "Download results (filtered) (CSV)" in _downloads(at)
    # changed settings: the old results stay, marked as from an earlier run
    at.number_input(key="cp_seed").set_value(7).run()
    assert any("earlier run" in i.value for i in at.info)
    # same settings again: served from the results store
    at.number_input(key="cp_seed").set_value(0).run()
    at.button(key="cp_run").click().run()
    assert not at.exception
    assert any("results store" in c.value for c in at.caption)


def test_good_upload_runs(data_dir):
    at = _page()
    at.file_uploader[0].set_value(("good.csv", (UPLOADS / "good.csv").read_bytes(), "text/csv")).run()
    assert not at.exception and not at.error
    text = " ".join(m.value for m in at.markdown)
    assert "good.csv" in text and "**4** will run" in text
    at.multiselect(key="cp_ckpts").set_value(["sft_reflection", "rl"]).run()
    at.button(key="cp_run").click().run()
    assert not at.exception and not at.error
    res = _results(at)
    # numbered by data row: row 1 is the first data row (line 2, under the header)
    assert len(res) == 8 and res["row"].tolist() == [1, 1, 2, 2, 3, 3, 5, 5]
    assert set(res["expected"]) == {"56088", "408", "645498", "357"}
    # row 4 ("not a problem", line 5 of the file) is listed with its reason
    errs = [d.value for d in at.dataframe if "error" in d.value.columns]
    assert errs and errs[-1]["row"].tolist() == [4] and errs[-1]["line"].tolist() == [5]
    assert any(lb.startswith("Download results") for lb in _downloads(at))


BAD = [
    ("binary.csv", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00", "binary"),
    ("latin1.txt", "12*3\ncaf\u00e9\n".encode("latin-1"), "not UTF-8"),
    ("empty.txt", b"", "empty"),
    ("huge.txt", b"12*34\n" * 200_000, "the limit is 1,000,000 bytes"),
    ("rows.txt", b"12*34\n" * 600, "the limit is 500"),
    ("broken.csv", b'prompt\n"12*34\n56*78\n', "not a well-formed CSV"),
    ("array.json", b"42", "single JSON int"),
]


@pytest.mark.parametrize("name,data,msg", BAD, ids=[b[0] for b in BAD])
def test_bad_uploads_are_messages(data_dir, name, data, msg):
    at = _page()
    at.file_uploader[0].set_value((name, data, "application/octet-stream")).run()
    assert not at.exception
    assert any(msg in e.value for e in at.error), [e.value for e in at.error]
    at.button(key="cp_run").click().run()
    assert not at.exception
    assert any("nothing to run" in w.value for w in at.warning)


def test_jsonl_with_bad_lines_runs_the_good_ones(data_dir):
    at = _page()
    at.file_uploader[0].set_value(("bad.jsonl", (UPLOADS / "bad.jsonl").read_bytes(), "application/json")).run()
    assert not at.exception and not at.error
    errs = at.dataframe[0].value
    assert errs["row"].tolist() == [2, 3]
    assert "expected a JSON object" in errs["error"].iloc[0]
    at.multiselect(key="cp_ckpts").set_value(["rl"]).run()
    at.button(key="cp_run").click().run()
    assert not at.exception
    assert _results(at)["row"].tolist() == [1]


def test_no_checkpoint_and_empty_text(data_dir):
    at = _page()
    at.multiselect(key="cp_ckpts").set_value([]).run()
    at.button(key="cp_run").click().run()
    assert not at.exception and any("at least one checkpoint" in w.value for w in at.warning)
    at.text_area(key="cp_text").input("   \n").run()
    assert not at.exception and any("Upload a file or paste" in i.value for i in at.info)


def test_prompt_settings_reach_a_text_model(data_dir, tmp_path, chat_tokenizer):
    """The 'Prompt and markers' settings prompt a text-format checkpoint (its rows are keyed by
    them: an edited instruction is not served the default's stored rows) and leave a DS
    checkpoint as it is."""
    from ds_core.analysis.evaluate import format_key
    from ds_core.models.checkpoint import Card, load_checkpoint, save_checkpoint
    from ds_core.models.model import init_model
    from ds_core.models.sampling import SamplingConfig
    from ds_core.paths import SHIPPED_DIR
    from ui.services.custom_prompts_run import _cache_key
    from ui.services.episodes import with_prompt_settings

    ck = tmp_path / "chat"
    save_checkpoint(ck, init_model(chat_tokenizer, "qwen2", hidden=32, layers=1, heads=2), chat_tokenizer, Card("chat"))
    chat, rl = load_checkpoint(ck), load_checkpoint(SHIPPED_DIR / "rl")
    fmt = (("instruction", "Compute {a} {word} {b}."),)
    edited_chat, same_rl = with_prompt_settings([chat, rl], fmt)
    assert same_rl is rl and format_key(edited_chat.format)["instruction"] == "Compute {a} {word} {b}."
    assert with_prompt_settings([chat], ()) == [chat]
    cfg = SamplingConfig()
    assert _cache_key(edited_chat, [], [], cfg, 0) != _cache_key(chat, [], [], cfg, 0)
    assert "format" not in _cache_key(rl, [], [], cfg, 0)

    at = _page()
    at.session_state["user_checkpoints"] = [str(ck)]
    at.run()
    at.multiselect(key="cp_ckpts").set_value(["rl", "chat"]).run()
    at.text_input(key="cp_fmt_instruction").input("Compute {a} {word} {b}.").run()
    at.number_input(key="cp_attempts").set_value(1).run()
    at.button(key="cp_run").click().run()
    assert not at.exception and not at.error
    assert set(_results(at)["checkpoint"]) == {"rl", "chat"}
