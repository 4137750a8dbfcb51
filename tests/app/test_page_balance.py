"""The Gradient balance page through Streamlit's AppTest: it renders, the toy's controls change
what is shown, the length sweep and dataset views react to their controls, bad input gives a
message (never a traceback), and computing stores a result that the next run reads back."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from ds_core.models.checkpoint import Card, save_checkpoint
from ds_core.models.model import init_model

PAGE = str(Path(__file__).resolve().parents[2] / "pages" / "5_Gradient_balance.py")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, char_tokenizer):
    d = tmp_path_factory.mktemp("ck") / "tinyck"
    save_checkpoint(
        d,
        init_model(char_tokenizer, "llama", seed=0, hidden=32, layers=1, heads=2),
        char_tokenizer,
        Card(condition="tiny"),
    )
    return d


def metrics(at) -> dict:
    return {m.label: m.value for m in at.metric}


def run(x):
    """Run an AppTest (or the AppTest of a widget whose value was just set) and check it."""
    at = x.run()
    assert not at.exception, at.exception
    return at


def test_page_renders_with_the_toy_and_shipped_results(data_dir):
    at = run(AppTest.from_file(PAGE, default_timeout=120))
    assert at.title[0].value == "Gradient balance"
    m = metrics(at)
    assert 0.5 < float(m["surrogate S:D (median)"]) < 2 and float(m["KL S:D (median)"]) > 2
    assert at.radio(key="balance_view").options == [
        "Toy (Figure 1)",
        "Length sweep",
        "Dataset distributions",
        "GRPO group",
    ]
    assert not at.error and len(at.dataframe) == 2  # the toy's summary and per-step tables
    from ds_core.analysis.balance.shipped import SHIPPED_FILE

    for view, n_min in (("Length sweep", 3), ("Dataset distributions", 2)):
        run(at.radio(key="balance_view").set_value(view))
        assert not at.error
        if SHIPPED_FILE.is_file():
            assert not at.warning
            assert any("Shipped precompute" in c.value for c in at.caption)
            assert len(at.dataframe) >= n_min


def test_toy_controls_change_what_is_shown(data_dir):
    at = run(AppTest.from_file(PAGE, default_timeout=120))
    kl0 = float(metrics(at)["KL S:D (median)"])
    run(at.slider(key="toy_attempt_length").set_value(40))
    kl40 = float(metrics(at)["KL S:D (median)"])
    assert kl40 > 1.2 * kl0  # retrained with L = 40 (the states differ too, so not 4x)
    run(at.slider(key="toy_kl_weight").set_value(0.0))
    assert metrics(at)["KL S:D (median)"] == "n/a"  # no KL gradient at all
    assert metrics(at)["θ_s push kept"] == "1"  # the whole surrogate push survives
    run(at.selectbox(key="toy_mode").set_value("sample"))
    run(at.selectbox(key="toy_demo").set_value("one correct attempt (SFT without reflection)"))
    run(at.checkbox(key="toy_log_abs").check())
    run(at.button(key="toy_reset").click())
    assert at.slider(key="toy_attempt_length").value == 10
    assert float(metrics(at)["KL S:D (median)"]) == pytest.approx(kl0, rel=1e-3)


def test_toy_settings_carry_over_to_the_sweep_and_back(data_dir):
    at = run(AppTest.from_file(PAGE, default_timeout=120))
    run(at.slider(key="toy_kl_weight").set_value(1.0))
    run(at.radio(key="balance_view").set_value("Length sweep"))
    assert any("`kl_weight=1.0`" in md.value for md in at.markdown)
    run(at.radio(key="balance_view").set_value("Toy (Figure 1)"))
    assert at.slider(key="toy_kl_weight").value == 1.0


def test_length_sweep_controls(data_dir):
    at = run(AppTest.from_file(PAGE, default_timeout=120))
    run(at.radio(key="balance_view").set_value("Length sweep"))
    n_tables = len(at.dataframe)
    run(at.multiselect(key="sweep_lengths").set_value([1, 4]))
    run(at.radio(key="sweep_mode").set_value("retrain"))
    assert any("From L = 1 to L = 4" in md.value for md in at.markdown)
    run(at.multiselect(key="sweep_lengths").set_value([]))
    assert any("Pick at least one attempt length" in i.value for i in at.info)
    run(at.selectbox(key="sweep_metric").set_value("norm_G_S"))
    assert len(at.dataframe) <= n_tables


def test_dataset_view_controls(data_dir):
    from ds_core.analysis.balance.shipped import SHIPPED_FILE

    if not SHIPPED_FILE.is_file():
        pytest.skip("no shipped precompute")
    at = run(AppTest.from_file(PAGE, default_timeout=120))
    run(at.radio(key="balance_view").set_value("Dataset distributions"))
    for key, value in (
        ("data_kind", "strip"),
        ("data_facet", "size"),
        ("data_colour", "checkpoint"),
        ("data_metric", "share_D"),
        ("data_kind", "violin"),
        ("data_facet", "none"),
    ):
        run(at.selectbox(key=key).set_value(value))
    run(at.multiselect(key="data_ckpts").set_value(["rl"]))
    assert any("**rl**" in c.value for c in at.caption)
    run(at.multiselect(key="data_objs").set_value([]))
    assert any("No episodes for this selection" in i.value for i in at.info)


def test_bad_input_is_a_message_and_compute_is_stored(data_dir, tiny):
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.session_state["user_checkpoints"] = [str(tiny)]
    run(at)
    run(at.radio(key="balance_view").set_value("Dataset distributions"))
    run(at.radio(key="data_source").set_value("compute / results store"))
    run(at.text_input(key="data_sizes").input("3y3"))
    assert any("cannot read size" in e.value for e in at.error)
    # the length sweep on a tiny checkpoint: computed with progress, stored, read back
    run(at.radio(key="balance_view").set_value("Length sweep"))
    run(at.radio(key="sweep_source").set_value("compute / results store"))
    run(at.selectbox(key="sweep_ck").set_value("tinyck"))
    run(at.text_input(key="sweep_sizes").input("1x1,3x3"))
    run(at.number_input(key="sweep_per_size").set_value(1))
    run(at.button(key="sweep_compute").click())
    assert any("Computed" in s.value and "stored" in s.value for s in at.success)
    assert any("no KL reference" in c.value for c in at.caption)  # tiny has no parent
    run(at)
    assert any("From the results store" in c.value for c in at.caption)


def test_dataset_view_on_a_chat_model_with_its_own_settings(data_dir, tmp_path, chat_tokenizer):
    """The dataset view computes on a text-format (chat) model with the sampling and prompt
    settings picked on the page, stores the result under them and reads it back; other settings
    are another result."""
    ck = tmp_path / "chat"
    save_checkpoint(ck, init_model(chat_tokenizer, "qwen2", hidden=32, layers=1, heads=2), chat_tokenizer, Card("chat"))
    at = AppTest.from_file(PAGE, default_timeout=300)
    at.session_state["user_checkpoints"] = [str(ck)]
    run(at)
    run(at.radio(key="balance_view").set_value("Dataset distributions"))
    run(at.radio(key="data_source").set_value("compute / results store"))
    run(at.selectbox(key="data_ck").set_value("chat"))
    run(at.text_input(key="data_sizes").input("1+1"))
    run(at.number_input(key="data_n").set_value(2))
    run(at.multiselect(key="data_objectives").set_value(["sft_sum"]))
    run(at.number_input(key="data_attempts").set_value(1))
    run(at.number_input(key="data_max_new").set_value(6))
    run(at.text_input(key="data_fmt_instruction").input("Compute {a} {word} {b}."))
    assert any("Not in the results store yet" in i.value for i in at.info)
    run(at.button(key="data_compute").click())
    assert not at.error, [e.value for e in at.error]
    assert any("Computed" in s.value and "stored" in s.value for s in at.success)
    run(at)
    assert any("From the results store" in c.value for c in at.caption)
    # the stored result is the one for these settings: its episodes were capped at 6 tokens
    from ds_core.analysis.balance.dataset import run_key_extra, stored_dataset
    from ds_core.models.sampling import SamplingConfig
    from ui.common import results_store
    from ui.services.calibration import checkpoint_ref

    fmt = (("instruction", "Compute {a} {word} {b}."),)
    extra = run_key_extra(checkpoint_ref("chat", ck, fmt).fmt_key)
    cfg = SamplingConfig(max_attempts=1, max_new_tokens=6)
    res = stored_dataset(results_store(), ck, "1+1", 2, ("sft_sum",), 0, cfg, extra)
    assert res is not None and len(res.frame) + len(res.notes) >= 1
    assert stored_dataset(results_store(), ck, "1+1", 2, ("sft_sum",), 0, cfg) is None  # default prompt: not run
    # the default instruction is another run: not stored yet
    run(at.text_input(key="data_fmt_instruction").input("What is {a} {word} {b}?"))
    assert any("Not in the results store yet" in i.value for i in at.info)


def test_group_view_computes_the_group_gradient_and_says_what_it_shows(data_dir):
    """sft_reflection on 3x3 problem 0, seed 0 (the view's default): a group of 16 with mixed outcomes."""
    at = run(AppTest.from_file(PAGE, default_timeout=300))
    run(at.radio(key="balance_view").set_value("GRPO group"))
    assert not at.error and not at.get("plotly_chart")  # nothing computed before the toggle
    run(at.toggle(key="grp_group_on").set_value(True))
    assert not at.error
    text = " ".join(m.value for m in at.markdown)
    assert "per-episode |G_S|/|G_D| equals SFT's on" in text  # Theorem 3.1's weighting, checked
    assert "Group surrogate |G_S|/|G_D| =" in text and "SFT's" in text
    figs = next(d.value for d in at.dataframe if "|G_S|/|G_D|" in d.value.columns)
    assert set(figs["objective"]) == {"surrogate", "SFT sum", "KL k3", "KL k1"}
    eps = next(d.value for d in at.dataframe if "A" in d.value.columns)
    assert len(eps) == 16 and list(eps["episode"]) == list(range(1, 17))
    contrib = [c for c in eps.columns if c.endswith(": S") or c.endswith(": D")]
    sums = {c.split(":")[0] for c in contrib}
    for o in sums:  # every objective's contributions add to 1 (the O tokens are the rest)
        assert eps[f"{o}: S"].sum() + eps[f"{o}: D"].sum() == pytest.approx(1.0, abs=0.02)
    assert abs(eps["A"].sum()) < 1e-4 and (eps["A"] > 0).any() and (eps["A"] < 0).any()
    # an all-correct group has no surrogate gradient, and the page says so from the numbers
    run(at.number_input(key="grp_index").set_value(1))
    assert "cannot appear" in " ".join(m.value for m in at.markdown)
    # a typed problem the model cannot read is a message
    run(at.radio(key="grp_source").set_value("typed"))
    run(at.text_input(key="grp_text").set_value("12 times banana"))
    assert at.error and not at.exception
