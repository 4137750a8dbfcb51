"""The Streamlit home page, through Streamlit's AppTest."""

from pathlib import Path

from streamlit.testing.v1 import AppTest

from ds_core.episodes.tokenizer import build_tokenizer
from ds_core.models.checkpoint import Card, save_checkpoint
from ds_core.models.model import init_model

APP = str(Path(__file__).resolve().parents[2] / "app.py")


def test_home_renders_and_lists_checkpoints(data_dir):
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    assert at.title[0].value == "DS-Lens"
    assert any("Results store" in h.value for h in at.subheader)
    assert any(str(data_dir) in m.value for m in at.markdown)


def test_home_user_checkpoint_dir(data_dir, tmp_path):
    tok = build_tokenizer()
    ck = tmp_path / "mine"
    save_checkpoint(ck, init_model(tok, "llama", hidden=32, layers=1, heads=2), tok, Card(condition="my-condition"))
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.text_input[0].input(str(ck)).run()
    assert not at.exception
    table = at.dataframe[-1].value
    assert "my-condition" in set(table["condition"])


def test_home_bad_path_is_a_message_not_a_traceback(data_dir, tmp_path):
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.text_input[0].input(str(tmp_path / "nope")).run()
    assert not at.exception
    assert any("not a checkpoint directory" in e.value for e in at.error)


def test_home_shows_shipped_checkpoints_with_metrics(data_dir):
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    table = at.dataframe[0].value
    assert {"base", "sft", "sft_reflection", "rl"} <= set(table["condition"])
    rl = table[table["condition"] == "rl"].iloc[0]
    import json

    ev = json.loads((Path(APP).parent / "checkpoints" / "rl" / "eval.json").read_text())
    assert rl["acc 3x3 %"] == round(100 * ev["sizes"]["3x3"]["accuracy"]["p"])
    parents = dict(zip(table["checkpoint"], table["parent"]))  # names, not content hashes
    assert parents["rl"] == "sft_reflection" and parents["sft"] == "base" and parents["base"] == ""


def test_home_draws_the_ds_picture_from_a_parsed_episode(data_dir):
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    body = at.html[0].value
    assert "[RESAMPLE]" in body and "[STOP]" in body
    assert "(decision)" in body and "(sampling)" in body and "(prompt)" in body


def test_demo_episode_is_wrong_then_right():
    from ds_core.episodes.traces import demo_episode

    ep = demo_episode()
    assert [a.correct for a in ep.attempts] == [False, True]
    assert [d.verdict for d in ep.decisions] == ["RESAMPLE", "STOP"]
    assert ep.correct and not ep.flags
    assert ep.roles.count("decision") == 2


def test_user_checkpoint_is_offered_to_other_pages(data_dir, tmp_path):
    """A directory added on Home joins ui.common.checkpoint_choices() for the session."""
    tok = build_tokenizer()
    ck = tmp_path / "mine2"
    save_checkpoint(ck, init_model(tok, "llama", hidden=32, layers=1, heads=2), tok, Card(condition="x"))
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.text_input[0].input(str(ck)).run()
    assert str(ck.resolve()) in at.session_state["user_checkpoints"]


def test_home_says_how_to_build_the_real_model_then_lists_it(data_dir):
    """Without data/models/smollm2-135m-instruct Home says `make real-model`; a model built under
    $DS_LENS_DATA/models is listed with the shipped ones and offered by every picker."""
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    assert any("make real-model" in c.value for c in at.caption)
    tok = build_tokenizer()
    built = data_dir / "models" / "smollm2-135m-instruct"
    save_checkpoint(built, init_model(tok, "llama", hidden=32, layers=1, heads=2), tok, Card(condition="built"))
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    assert not any("make real-model" in c.value for c in at.caption)
    assert "built" in set(at.dataframe[0].value["condition"])
    from ui.common import checkpoint_choices

    assert checkpoint_choices()["smollm2-135m-instruct"] == str(built)


def _added(at, path):
    at.text_input(key="home_extra").input(str(path)).run()
    assert not at.exception
    return at


def _broken(ck, file, content):
    if isinstance(content, int):
        with open(ck / file, "r+b") as fh:
            fh.truncate(content)
    else:
        (ck / file).write_text(content)


def test_home_says_what_is_wrong_with_a_bad_directory_and_lets_it_go(data_dir, tmp_path):
    """A directory added while healthy, then broken (deep or wrong-shaped eval.json / card.json,
    weights grown to 50 GB): the next session still lists it (the list is kept in the data
    directory), says in one line what is wrong, shows the others, and removes it on request."""
    tok = build_tokenizer()
    cases = {
        "deep_eval": ("eval.json", "[" * 50_000 + "]" * 50_000, "nested"),
        "list_sizes": ("eval.json", '{"sizes": [1, 2]}', "no 'sizes' object"),
        "bad_report": ("eval.json", '{"sizes": {"3x3": {"n": "many"}}}', "not an evaluation report"),
        "dup_eval": ("eval.json", '{"sizes": {}, "sizes": {}}', "appears twice"),
        "deep_card": ("card.json", "[" * 50_000 + "]" * 50_000, "nested"),
        "sparse_weights": ("model.safetensors", 50 * 2**30, "more than its header describes"),  # hashing: minutes
    }
    for name, (file, content, word) in cases.items():
        ck = tmp_path / name
        save_checkpoint(ck, init_model(tok, "llama", hidden=32, layers=1, heads=2), tok, Card(condition=name))
        first = _added(AppTest.from_file(APP, default_timeout=60).run(), ck)
        assert not first.error and name in set(first.dataframe[-1].value["checkpoint"])
        _broken(ck, file, content)
        at = AppTest.from_file(APP, default_timeout=60).run()  # a new session, after the damage
        assert not at.exception
        warnings = " ".join(w.value for w in at.warning)
        assert word in warnings, (name, warnings)
        table = at.dataframe[-1].value
        assert {"rl", "sft", name} <= set(table["checkpoint"])  # the others are still listed
        assert table.set_index("checkpoint").at["rl", "acc 3x3 %"] is not None
        at.run()  # a rerun keeps working
        assert not at.exception
        (rm,) = [b for b in at.button if b.label.startswith("Remove")]
        rm.click().run()
        assert not at.exception
        assert name not in set(at.dataframe[-1].value["checkpoint"])
        assert at.session_state["user_checkpoints"] == []
        again = AppTest.from_file(APP, default_timeout=60).run()  # removed for good
        assert name not in set(again.dataframe[-1].value["checkpoint"])


def test_home_refuses_a_folder_the_loader_refuses(data_dir, tmp_path):
    """Adding runs the loader's checks: a folder with only config.json, a copy of rl with
    truncated weights, a deep card.json, 50 GB sparse weights are refused with the reason and not
    added (no headline metrics borrowed from rl)."""
    import shutil

    from ds_core.paths import SHIPPED_DIR

    tok = build_tokenizer()
    only_cfg = tmp_path / "only_config"
    only_cfg.mkdir()
    shutil.copy(SHIPPED_DIR / "rl" / "config.json", only_cfg)
    trunc = tmp_path / "rl_truncated"
    shutil.copytree(SHIPPED_DIR / "rl", trunc)
    data = (trunc / "model.safetensors").read_bytes()
    (trunc / "model.safetensors").write_bytes(data[: len(data) // 2])
    cases = [(only_cfg, "no weights"), (trunc, "corrupt or truncated")]
    for name, file, content, word in (
        ("deep_card", "card.json", "[" * 50_000 + "]" * 50_000, "nested"),
        ("sparse", "model.safetensors", 50 * 2**30, "more than its header describes"),
    ):
        ck = tmp_path / name
        save_checkpoint(ck, init_model(tok, "llama", hidden=32, layers=1, heads=2), tok, Card(condition=name))
        _broken(ck, file, content)
        cases.append((ck, word))
    for ck, word in cases:
        at = _added(AppTest.from_file(APP, default_timeout=60).run(), ck)
        errors = " ".join(e.value for e in at.error)
        assert "Not added" in errors and word in errors, (ck.name, errors)
        assert ck.name not in set(at.dataframe[-1].value["checkpoint"])
        assert at.session_state["user_checkpoints"] == []


def test_hypothesis_page_shows_every_claim_with_a_computed_verdict(data_dir):
    from ds_core.analysis.hypothesis import shipped_claims

    at = AppTest.from_file(str(Path(APP).parent / "pages" / "6_Hypothesis.py"), default_timeout=120).run()
    assert not at.exception and not at.error
    text = " ".join(m.value for m in at.markdown)
    for c in shipped_claims():
        assert c.claim in text and c.numbers in text
    table = next(d.value for d in at.dataframe if "verdict" in d.value.columns)
    assert set(table["verdict"]) <= {"supported", "contradicted", "cannot tell"} and len(table) == 7
    assert "(/Gradient_balance)" in text and "(/Calibration)" in text and "(/Episode_explorer)" in text
