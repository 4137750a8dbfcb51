"""ui.services.custom_prompts_upload and ui.services.custom_prompts_run: reading uploads (limits,
encodings, CSV/JSONL/TXT quirks), per-row parse errors, and running checkpoints on the rows (real
shipped checkpoints, real numbers)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

import ui.services.custom_prompts_run as runner
import ui.services.custom_prompts_upload as up
from ds_core.analysis.metrics import wald_interval
from ds_core.episodes.tasks import Problem, TaskError
from ds_core.models.checkpoint import Card, load_checkpoint, save_checkpoint
from ds_core.models.model import init_model
from ds_core.models.sampling import SamplingConfig
from ds_core.store import ResultsStore

REPO = Path(__file__).resolve().parents[2]
UPLOADS = Path(__file__).resolve().parents[1] / "data" / "uploads"


# --- reading -------------------------------------------------------------------------------------
def test_decode_limits_and_encodings():
    with pytest.raises(up.UploadError, match="empty"):
        up.read_upload("a.txt", b"")
    with pytest.raises(up.UploadError, match="empty"):
        up.read_upload("a.txt", b"  \n\n \t")
    with pytest.raises(up.UploadError, match="binary"):
        up.read_upload("a.csv", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    with pytest.raises(up.UploadError, match="UTF-16"):
        up.read_upload("a.txt", "123*456\n".encode("utf-16"))
    with pytest.raises(up.UploadError, match=r"not UTF-8 text: byte 0xe9 on line 2"):
        up.read_upload("a.txt", "123*456\ncaf\u00e9 12*3\n".encode("latin-1"))
    with pytest.raises(up.UploadError, match="1,000,001 bytes; the limit is 1,000,000"):
        up.read_upload("a.txt", b"1*2\n" + b" " * (up.MAX_BYTES - 3))
    # a UTF-8 byte-order mark is skipped (the CSV header is still found) and noted
    ps = up.read_upload("a.csv", b"\xef\xbb\xbfprompt\n123*456\n")
    assert ps.rows == (up.PromptRow(1, "123*456", line=2),) and "byte-order mark" in ps.notes[0]
    # UploadError is a TaskError: the app's user_errors shows it as a message
    assert issubclass(up.UploadError, TaskError)


def test_row_limit():
    ok = "\n".join(["12*34"] * up.MAX_ROWS)
    assert len(up.read_text(ok).rows) == up.MAX_ROWS
    too_many = ok + "\n12*34"
    with pytest.raises(up.UploadError, match="501 non-empty rows; the limit is 500"):
        up.read_text(too_many)
    with pytest.raises(up.UploadError, match="more than 500"):
        up.read_upload("a.csv", ("prompt\n" + too_many).encode())
    with pytest.raises(up.UploadError, match="501 non-empty rows"):
        up.read_upload("a.jsonl", "\n".join(['{"prompt": "1*2"}'] * 501).encode())


def test_txt_rows_keep_line_numbers_and_skip_blanks():
    ps = up.read_upload("p.txt", b"123*456\n\n  \nWhat is 12 times 34?\r\nnonsense\n")
    assert ps.fmt == "txt"
    assert [(r.line, r.prompt) for r in ps.rows] == [(1, "123*456"), (4, "What is 12 times 34?"), (5, "nonsense")]
    parsed, errors = up.parse_rows(ps)
    assert [p.problem for p in parsed] == [Problem(123, 456), Problem(12, 34)]
    assert [e.line for e in errors] == [5] and "cannot read 'nonsense'" in errors[0].error


def test_csv_prompt_column_expected_and_quoting():
    data = b'id,Prompt,expected\n1,123*456,56088\n2,"1,234 x 5",6170\n3,12*34,999\n4,,7\n5,12*3,twelve\n'
    ps = up.read_upload("p.csv", data)
    assert ps.fmt == "csv" and not ps.notes
    assert [(r.line, r.prompt, r.given) for r in ps.rows] == [
        (2, "123*456", "56088"),
        (3, "1,234 x 5", "6170"),
        (4, "12*34", "999"),
        (6, "12*3", "twelve"),
    ]
    assert [(e.line, e.error) for e in ps.errors] == [(5, "no prompt in this row's prompt column")]
    assert runner._given_flags("56,088", Problem(123, 456)) == []
    assert runner._given_flags("999", Problem(12, 34)) == [runner.GIVEN_DIFFERS]
    assert runner._given_flags("twelve", Problem(12, 3)) == [runner.GIVEN_UNREADABLE]


def test_csv_without_prompt_column_uses_first_column():
    ps = up.read_upload("p.csv", b"question,label\n123*456,a\n7*8,b\n")
    assert [r.prompt for r in ps.rows] == ["123*456", "7*8"]
    assert "first column ('question')" in ps.notes[0]
    ps = up.read_upload("p.csv", b"123*456,a\n7*8,b\n")  # no header: the first row is data
    assert [r.line for r in ps.rows] == [1, 2] and "no header row" in ps.notes[0]
    ps = up.read_upload("p.tsv", b"prompt\tx\n123 x 45\t1\n")
    assert ps.rows[0].prompt == "123 x 45" and "tab-separated" in ps.notes[0]


def test_csv_malformed_and_empty():
    with pytest.raises(up.UploadError, match="not a well-formed CSV"):
        up.read_upload("p.csv", b'prompt\n"123*456"x\n')
    with pytest.raises(up.UploadError, match="not a well-formed CSV"):
        up.read_upload("p.csv", b'prompt\n"123*456\n7*8\n')  # unclosed quote
    with pytest.raises(up.UploadError, match="header but no data rows"):
        up.read_upload("p.csv", b"prompt,expected\n")


def test_jsonl_bad_lines_are_row_errors():
    lines = [
        '{"prompt": "123*456", "expected": 56088}',
        "[1, 2]",
        '"12*3"',
        '{"prompt": 5}',
        '{"question": "1*2"}',
        "{not json",
        "",
        "42",
        '{"PROMPT": " 7 x 8 "}',
    ]
    ps = up.read_upload("p.jsonl", "\n".join(lines).encode())
    assert [(r.line, r.prompt, r.given) for r in ps.rows] == [(1, "123*456", "56088"), (9, "7 x 8", None)]
    errs = {e.line: e.error for e in ps.errors}
    assert sorted(errs) == [2, 3, 4, 5, 6, 8]
    # numbered by data row (the blank line 7 is not a row), each keeping its line in the file
    assert [(e.row, e.line) for e in ps.errors][-1] == (7, 8) and ps.rows[-1].row == 8
    assert "an array, expected a JSON object" in errs[2]
    assert "a JSON string" in errs[3]
    assert "'prompt' must be text, got int" in errs[4]
    assert "no 'prompt' key (keys: question)" in errs[5]
    assert errs[6].startswith("not valid JSON")
    assert "a number" in errs[8]


def test_line_separators_inside_strings_do_not_split_rows():
    """U+2028/U+2029 (and other str.splitlines separators) inside a JSON string or a CSV field are
    text, not line ends: rows split on \\n and \\r\\n only, with their line numbers kept."""
    body = '{"prompt": "12*34\u2028note"}\n{"prompt": "5\u2029*6", "expected": 30}\r\n{"prompt": "7\x85*8"}\n'
    ps = up.read_upload("p.jsonl", body.encode())
    assert [(r.line, r.prompt) for r in ps.rows] == [(1, "12*34\u2028note"), (2, "5\u2029*6"), (3, "7\x85*8")]
    assert not ps.errors and ps.rows[1].given == "30"
    csv_ps = up.read_upload("p.csv", "prompt,expected\r\n12*34\u2028x,408\r\n5*6,30\r\n".encode())
    assert [(r.line, r.prompt) for r in csv_ps.rows] == [(2, "12*34\u2028x"), (3, "5*6")]
    txt = up.read_upload("p.txt", "1*2\u20283*4\x0c\x1c!\n5*6\n".encode())
    assert [(r.line, r.prompt) for r in txt.rows] == [(1, "1*2\u20283*4\x0c\x1c!"), (2, "5*6")]
    assert up.detect_format("x", '\u2028\n{"prompt": 1}') == "jsonl"


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "txt"])
@pytest.mark.parametrize("length", [up.MAX_ROW_CHARS + 1, 200_000])
def test_an_over_long_row_is_a_row_error(fmt, length):
    """One very long row (under the csv module's field limit or over it) is that row's error; the
    rows around it are read."""
    big = "9" * length
    if fmt == "csv":
        data = f'prompt\n12*34\n"{big}"\n5*6\n'
    elif fmt == "jsonl":
        data = f'{{"prompt": "12*34"}}\n{{"prompt": "{big}"}}\n{{"prompt": "5*6"}}\n'
    else:
        data = f"12*34\n{big}\n5*6\n"
    ps = up.read_upload(f"p.{fmt}", data.encode())
    assert [r.prompt for r in ps.rows] == ["12*34", "5*6"]
    (err,) = ps.errors
    assert err.line == (3 if fmt == "csv" else 2) and "limit" in err.error and len(err.to_dict()["prompt"]) < 100


def test_uploaded_json_with_duplicate_keys_or_deep_nesting():
    """A JSONL row with a key twice is that row's error; a JSON document with one, or nested
    deeper than the reader's limit, is refused with the reason (never resolved silently)."""
    ps = up.read_upload(
        "p.jsonl", b'{"prompt": "1*2"}\n{"prompt": "3*4", "prompt": "=cmd"}\n' + b"[" * 5000 + b"]" * 5000
    )
    assert [r.prompt for r in ps.rows] == ["1*2"]
    errs = {e.line: e.error for e in ps.errors}
    assert "'prompt' appears twice" in errs[2] and "nested 5,000 levels" in errs[3]
    with pytest.raises(up.UploadError, match="'prompt' appears twice"):
        up.read_upload("p.json", b'[{"prompt": "1*2", "prompt": "3*4"}]')
    with pytest.raises(up.UploadError, match="nested"):
        up.read_upload("p.json", b"[" * 5000 + b"]" * 5000)


def test_json_list_and_sniffing():
    ps = up.read_upload("p.json", b'["123*456", {"prompt": "7*8"}, 3]')
    assert [r.prompt for r in ps.rows] == ["123*456", "7*8"] and [e.row for e in ps.errors] == [3]  # position
    with pytest.raises(up.UploadError, match="single JSON int"):
        up.read_upload("p.json", b"3")
    assert up.read_upload("prompts.dat", b'{"prompt": "1*2"}\n').fmt == "jsonl"
    assert up.read_upload("prompts", b"1*2\n").fmt == "txt"


def test_absurd_sizes_are_rejected_per_row():
    ps = up.read_text("9" * 40 + " * 3\n123*456\n" + "1" * 300 + "\n12 - 3\n")
    parsed, errors = up.parse_rows(ps)
    assert [p.line for p in parsed] == [2]
    errs = {e.line: e.error for e in errors}
    assert "has 40 digits; supported 1..12" in errs[1]
    assert "300 characters long" in errs[3]
    assert "negative numbers and subtraction" in errs[4]
    # long prompts are shortened in the error table
    assert len(up.errors_frame(errors)["prompt"].iloc[1]) == up.PREVIEW_CHARS


def test_fixture_files_read():
    good = up.read_upload("good.csv", (UPLOADS / "good.csv").read_bytes())
    parsed, errors = up.parse_rows(good)
    assert len(parsed) == 4 and [e.line for e in errors] == [5]
    bad = up.read_upload("bad.jsonl", (UPLOADS / "bad.jsonl").read_bytes())
    assert len(bad.rows) == 1 and len(bad.errors) == 2


def test_streams_name_problem_and_repeat():
    ps = up.read_text("12*34\n5*6\n12 x 34\n")
    parsed, _ = up.parse_rows(ps)
    assert runner.streams_for(parsed) == ["custom:12*34:0", "custom:5*6:0", "custom:12*34:1"]


# --- running -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shipped():
    return {n: load_checkpoint(REPO / "checkpoints" / n) for n in ("sft_reflection", "rl")}


PROMPTS = "123*456\nWhat is 321 times 654?\n987 x 6543\nhello\n123*4567890\n" + "9" * 13 + "*2\n"


def test_run_prompts_real_checkpoints(shipped, tmp_path):
    parsed, errors = up.parse_rows(up.read_text(PROMPTS))
    assert [e.line for e in errors] == [4, 6]
    calls = []
    store = ResultsStore(tmp_path / "data")
    cfg = SamplingConfig()
    run = runner.run_prompts(
        list(shipped.values()),
        parsed,
        cfg,
        seed=0,
        store=store,
        parse_errors=errors,
        progress=lambda lab, d, t: calls.append((lab, d, t)),
    )
    res = run.results
    assert list(res.columns) == list(runner.RESULT_COLUMNS)
    assert len(res) == 8 and sorted(set(res["checkpoint"])) == ["rl", "sft_reflection"]
    assert res["row"].tolist() == [1, 1, 2, 2, 3, 3, 5, 5]
    assert set(res["expected"]) == {"56088", "209934", "6457941", str(123 * 4567890)}
    # per-row consistency
    for r in res.itertuples():
        assert r.correct == (r.answer == r.expected)
        dec = r.decisions.split(",") if r.decisions else []
        assert len(dec) == r.decision_tokens <= r.attempts
        assert set(dec) <= {"STOP", "RESAMPLE"}
        assert r.decision_share == pytest.approx(r.decision_tokens / r.generated_tokens)
        assert len(r.attempt_answers.split(",")) == r.attempts
    # the RL checkpoint solves 3x3 in distribution with one attempt and one decision token
    first = res[(res["row"] == 1) & (res["checkpoint"] == "rl")].iloc[0]
    assert first.correct and first.answer == "56088"
    # summary: accuracy with the paper's Wald interval
    for s in run.summary.itertuples():
        rows = res[res["checkpoint"] == s.checkpoint]
        k = int(rows["correct"].sum())
        assert (s.n, s.correct) == (4, k) and s.accuracy == pytest.approx(k / 4)
        assert (s.wald_lo, s.wald_hi) == pytest.approx(wald_interval(k, 4))
        assert s.mean_attempts == pytest.approx(rows["attempts"].mean())
        assert s.decision_share == pytest.approx(rows["decision_tokens"].sum() / rows["generated_tokens"].sum())
        assert not s.from_store and s.not_run == 0
    # errors: the parse errors, no context errors (one 3x7 attempt fits a 1024 context)
    assert run.errors["row"].tolist() == [4, 6] and set(run.errors["checkpoint"]) == {""}
    # progress: monotone, ends at total = 8 episodes
    done = [d for _, d, _ in calls]
    assert done == sorted(done) and calls[-1][1:] == (8, 8)
    # JSON download: parses, holds everything
    doc = json.loads(run.to_json())
    assert len(doc["results"]) == 8 and len(doc["errors"]) == 2 and doc["settings"]["seed"] == 0
    assert doc["settings"]["sampling"]["temperature"] == 1.0

    # second run: from the store, identical rows
    again = runner.run_prompts(list(shipped.values()), parsed, cfg, seed=0, store=store, parse_errors=errors)
    assert again.summary["from_store"].all()
    pd.testing.assert_frame_equal(again.results, run.results)


def test_rows_are_reproducible_whatever_the_file(shipped):
    rl = shipped["rl"]
    cfg = SamplingConfig(temperature=1.0)
    a, _ = up.parse_rows(up.read_text("987 x 65432\n123*456\n"))
    b, _ = up.parse_rows(up.read_text("5*6\n123 × 456 =\n11*11\n987*65432\n"))
    ra = runner.run_prompts([rl], a, cfg, seed=3).results.set_index("expected")
    rb = runner.run_prompts([rl], b, cfg, seed=3).results.set_index("expected")
    for exp in ("64581384", "56088"):
        assert ra.loc[exp, "generation"] == rb.loc[exp, "generation"]


def test_context_too_short_is_a_row_error(tmp_path, char_tokenizer):
    d = tmp_path / "short"
    save_checkpoint(
        d,
        init_model(char_tokenizer, "llama", hidden=32, layers=1, heads=2, max_positions=64),
        char_tokenizer,
        Card(condition="short"),
    )
    ck = load_checkpoint(d)
    parsed, _ = up.parse_rows(up.read_text("12*34\n123456*7891\n"))
    assert runner.min_tokens(ck, parsed[0].problem) <= 64 < runner.min_tokens(ck, parsed[1].problem)
    run = runner.run_prompts([ck], parsed, SamplingConfig(max_new_tokens=20), seed=0)
    assert run.results["row"].tolist() == [1]
    assert run.errors["row"].tolist() == [2] and run.errors["checkpoint"].tolist() == ["short"]
    assert "context of short is 64" in run.errors["error"].iloc[0]
    assert run.summary.iloc[0]["not_run"] == 1


def test_bad_seed_and_settings_are_user_errors(shipped):
    from ds_core.models.sampling import RolloutError

    parsed, _ = up.parse_rows(up.read_text("1*2\n"))
    with pytest.raises(TaskError, match="seed"):
        runner.run_prompts([shipped["rl"]], parsed, seed=-1)
    with pytest.raises(RolloutError, match="top_p"):
        runner.run_prompts([shipped["rl"]], parsed, {"top_p": 0.0})
    with pytest.raises(RolloutError, match="unknown sampling settings: temp"):
        SamplingConfig.coerce({"temp": 1.0})
    assert SamplingConfig.coerce({"temperature": 0.0, "max_attempts": 2}) == SamplingConfig(0.0, max_attempts=2)


def test_charts_build():
    from ui.charts.custom import accuracy_figure, decisions_figure

    summary = pd.DataFrame(
        [
            {"checkpoint": "rl", "n": 4, "accuracy": 0.5, "wald_lo": 0.01, "wald_hi": 0.99},
            {"checkpoint": "sft", "n": 0, "accuracy": float("nan"), "wald_lo": float("nan"), "wald_hi": float("nan")},
        ]
    )
    fig = accuracy_figure(summary)
    assert list(fig.data[0].x) == ["rl"] and list(fig.data[0].y) == [50.0]
    assert fig.data[0].error_y.array[0] == pytest.approx(49.0)
    res = pd.DataFrame({"checkpoint": ["rl", "rl", "rl", "sft"], "decisions": ["STOP", "RESAMPLE,STOP", "STOP", ""]})
    fig = decisions_figure(res)
    by = {t.name: dict(zip(t.x, t.y)) for t in fig.data}
    assert by["STOP"]["rl"] == pytest.approx(200 / 3) and by["(none)"]["sft"] == 100
    assert accuracy_figure(summary.iloc[0:0]).layout.annotations[0].text == "no rows ran"
