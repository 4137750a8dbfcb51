"""The Calibration page, through Streamlit's AppTest: renders from eval.json on an empty store,
controls change what is shown, a missing run is computed, stored and then served from the store."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from ds_core.store import ResultsStore

REPO = Path(__file__).resolve().parents[2]

PAGE = str(REPO / "pages" / "4_Calibration.py")


def _page() -> AppTest:
    return AppTest.from_file(PAGE, default_timeout=120)


def _table1(at):
    return at.dataframe[0].value.set_index("row")


def _request(at, ckpts, sizes, n):
    at.multiselect(key="cal_ckpts").set_value(ckpts)
    at.text_input(key="cal_sizes").set_value(sizes)
    at.number_input(key="cal_n").set_value(n)
    return at.run()


def test_renders_shipped_numbers_on_an_empty_store(data_dir):
    at = _page().run()
    assert not at.exception
    assert at.title[0].value == "Calibration"
    t1 = _table1(at)
    assert {"base", "sft", "sft_reflection", "rl", "paper: RL", "paper: Base"} <= set(t1.index)
    assert t1.at["base", "3x3"] == "93 (88–98)" and t1.at["rl", "source"] == "eval.json"
    assert t1.at["paper: RL", "3x9"] == "34"
    assert len(at.get("plotly_chart")) == 5  # Table 1, Figures 2 and 3, decision regret, the DS lab section
    assert len(at.get("download_button")) == 6  # every table has its CSV (the lab section's too)
    assert not [b for b in at.button if b.label == "Compute missing runs"]  # nothing missing
    assert any("28 from eval.json" in c.value for c in at.caption)
    assert not at.error
    r = _regret(at)  # the shipped full regret runs (ds_core/data/decisions_v1.json) of every shipped condition
    assert set(r.loc[["base", "sft", "rl", "sft_reflection"], "source"]) == {"shipped"}
    base = r[r["size"] == "3x3"].loc["base"]  # base kept 7 wrong answers, but revising is worth 0: it never retries
    assert base["own"] == "93.0 (88.0–97.0)" and base["regret"] == "0.0 (0.0–0.0)" and base["no save %"] == 7.0


def test_controls_change_what_is_shown(data_dir):
    at = _page().run()
    at.radio(key="cal_interval").set_value("Wilson").run()
    assert not at.exception and _table1(at).at["base", "3x3"] == "93 (86–97)"
    _request(at, ["rl"], "3x3, 3x9", 100)
    assert not at.exception
    t1 = _table1(at)
    assert list(t1.index) == ["rl", "paper: RL"]  # paper rows follow the checkpoints
    assert list(t1.columns) == ["3x3", "3x9", "source"]
    at.multiselect[1].set_value(["rl", "sft"]).run()  # paper reference rows
    assert list(_table1(at).index) == ["rl", "paper: SFT, no reflection", "paper: RL"]
    long = at.dataframe[1].value
    assert set(long["quantity"]) == {"p_s", "p_dC", "p_dW"} and len(long) == 2 * 3


def test_compute_missing_run_is_stored_then_served_from_store(data_dir):
    at = _request(_page().run(), ["rl"], "3x3", 3)
    assert not at.exception
    assert _table1(at).at["rl", "source"] == "missing"
    assert any("1 of 1 cells" in i.value for i in at.info)
    at.button(key="cal_compute").click().run()
    assert not at.exception and not at.error
    assert _table1(at).at["rl", "source"] == "computed"
    assert any("Computed and stored 1 runs" in s.value for s in at.success)
    runs = ResultsStore(data_dir).list_runs()
    assert len(runs) == 1 and runs[0].key.n == 3 and runs[0].n_episodes == 3
    again = _request(_page().run(), ["rl"], "3x3", 3)  # a new session: from the store
    assert not again.exception
    assert _table1(again).at["rl", "source"] == "store"
    assert _table1(again).at["rl", "3x3"] == _table1(at).at["rl", "3x3"]
    assert not [b for b in again.button if b.label == "Compute missing runs"]


@pytest.mark.parametrize(
    "sizes, word",
    [
        ("3x99", "out of range"),
        ("what", "cannot read size"),
        ("1x1-1x12, 2x1-2x12", "at most 16 sizes"),
        ("", "no sizes"),
    ],
)
def test_bad_sizes_are_messages(data_dir, sizes, word):
    at = _page().run()
    at.text_input(key="cal_sizes").set_value(sizes).run()
    assert not at.exception
    assert any(word in e.value for e in at.error)


def test_unopenable_store_still_shows_eval_json(tmp_path, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("DS_LENS_DATA", str(blocker))
    at = _page().run()
    assert not at.exception
    assert any("results store cannot be opened" in w.value for w in at.warning)
    assert _table1(at).at["rl", "source"] == "eval.json"
    _request(at, ["rl"], "3x3", 3)
    assert not at.exception
    assert at.button(key="cal_compute").disabled


def test_user_checkpoint(data_dir, tmp_path, char_tokenizer):
    from ds_core.models.checkpoint import Card, save_checkpoint
    from ds_core.models.model import init_model

    ck = tmp_path / "mine"
    save_checkpoint(
        ck,
        init_model(char_tokenizer, "llama", seed=0, hidden=32, layers=1, heads=2),
        char_tokenizer,
        Card(condition="my-condition"),
    )
    at = _page().run()
    at.text_input(key="cal_new_dir").set_value(str(tmp_path / "nope"))
    at.button(key="cal_add").click().run()
    assert not at.exception and any("not a checkpoint directory" in e.value for e in at.error)
    at.text_input(key="cal_new_dir").set_value(str(ck))
    at.button(key="cal_add").click().run()
    assert not at.exception
    assert "mine" in at.multiselect(key="cal_ckpts").value
    _request(at, ["mine"], "3x3", 2)
    assert list(_table1(at).index) == ["mine"]  # no paper row for this condition
    at.button(key="cal_compute").click().run()
    assert not at.exception and not at.error
    assert _table1(at).at["mine", "source"] == "computed"


def test_prompt_settings_leave_ds_checkpoints_on_their_shipped_numbers(data_dir):
    """The 'Prompt and markers' settings apply to text-format checkpoints only: the shipped DS
    checkpoints keep their eval.json numbers with an edited instruction."""
    at = _page().run()
    at.text_input(key="cal_fmt_instruction").input("Compute {a} {word} {b}.").run()
    assert not at.exception and not at.error
    t1 = _table1(at)
    assert t1.at["rl", "source"] == "eval.json" and t1.at["base", "3x3"] == "93 (88–98)"


def test_max_new_tokens_is_its_own_run(data_dir):
    """A cap on the episode's tokens samples other episodes: eval.json is not served for it, the
    computed run is stored under the capped sampling key."""
    at = _request(_page().run(), ["rl"], "3x3", 2)
    assert _table1(at).at["rl", "source"] == "missing"  # n = 2: not eval.json's n
    at.number_input(key="cal_max_new").set_value(5).run()
    at.button(key="cal_compute").click().run()
    assert not at.exception and not at.error
    assert _table1(at).at["rl", "source"] == "computed"
    (run,) = ResultsStore(data_dir).list_runs()
    assert run.key.sampling["max_new_tokens"] == 5


def test_an_unusable_eval_json_is_named_and_its_cells_computed(data_dir, tmp_path, char_tokenizer):
    """A checkpoint whose eval.json is nested too deep or of the wrong shape: the page says why in
    one line, and its cells are offered for computing instead (no traceback, the page works)."""
    from ds_core.models.checkpoint import Card, save_checkpoint
    from ds_core.models.model import init_model

    for name, content, word in (
        ("deep", "[" * 20_000 + "]" * 20_000, "nested"),
        ("shape", '{"sizes": {"3x3": [1, 2]}}', "not an evaluation report"),
    ):
        ck = tmp_path / name
        save_checkpoint(
            ck, init_model(char_tokenizer, "llama", hidden=32, layers=1, heads=2), char_tokenizer, Card(name)
        )
        (ck / "eval.json").write_text(content)
        at = _page().run()
        at.text_input(key="cal_new_dir").set_value(str(ck))
        at.button(key="cal_add").click().run()
        _request(at, [name], "3x3", 2)
        assert not at.exception and not at.error, [e.value for e in at.error]
        assert any(word in w.value for w in at.warning)
        assert _table1(at).at[name, "source"] == "missing"


def _regret(at):
    return next(d.value for d in at.dataframe if "wrong kept" in d.value.columns).set_index("checkpoint")


def test_decision_regret_from_the_store_else_the_command_that_computes_it(data_dir):
    from ds_core.analysis.regret import regret_run
    from ds_core.models.checkpoint import load_checkpoint

    at = _request(_page().run(), ["rl"], "3x3", 3)
    assert not at.exception and _regret(at).at["rl", "source"] == "missing"
    code = "\n".join(c.value for c in at.code)
    assert "python -m ds_core decisions --checkpoint" in code and "--sizes 3x3 --n 3 --continuations 32" in code
    _, _, table = regret_run(
        load_checkpoint(REPO / "checkpoints" / "rl"), ["3x3"], n_problems=3, n=32, store=ResultsStore(data_dir)
    )
    at = _request(_page().run(), ["rl"], "3x3", 3)
    r = _regret(at)
    assert not at.exception and r.at["rl", "source"] == "store" and r.at["rl", "episodes"] == 3
    own = table.iloc[0]
    assert r.at["rl", "own"].startswith(f"{100 * own['own']:.1f} (") and r.at["rl", "regret"].startswith(
        f"{100 * own['regret']:.1f}"
    )
    assert not any("python -m ds_core decisions" in c.value for c in at.code)
