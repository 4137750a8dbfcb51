"""The Compare checkpoints page, through Streamlit's AppTest."""

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from ds_core.episodes.tasks import test_set as fixed_set
from ds_core.models.checkpoint import Card, save_checkpoint
from ds_core.models.model import init_model

PAGE = str(Path(__file__).resolve().parents[2] / "pages" / "2_Compare_checkpoints.py")


def _page() -> AppTest:
    return AppTest.from_file(PAGE, default_timeout=120)


def _compared(**settings) -> AppTest:
    """The page after pressing Compare with cheap settings (retry cap 2)."""
    at = _page().run()
    at.number_input(key="cmp_attempts").set_value(settings.pop("attempts", 2))
    for key, value in settings.items():
        at.number_input(key=key).set_value(value)
    at.button(key="cmp_go").click().run()
    assert not at.exception
    return at


def _errors(at) -> str:
    return " | ".join(e.value for e in at.error)


def test_renders_with_the_compare_button(data_dir):
    at = _page().run()
    assert not at.exception
    assert at.title[0].value == "Compare checkpoints"
    assert [b.label for b in at.button] == ["Compare"]
    assert at.multiselect(key="cmp_ckpts").value == ["sft_reflection", "rl"]
    assert any("press **Compare**" in i.value for i in at.info)
    assert not at.header  # nothing computed before Compare


def test_compare_shows_episodes_teacher_forcing_and_attribution(data_dir):
    at = _compared()
    assert not at.error and not at.warning, _errors(at)
    assert [h.value for h in at.header] == [
        "Sampled episodes",
        "Teacher-forced on one transcript",
        "Over a test set: every model's verdicts on one model's episodes",
        "Δ attribution on the same transcript",
    ]
    p = fixed_set("3x4")[5]  # the default problem
    assert any(f"{p.display} = {p.answer}" in m.value for m in at.markdown)
    outcomes = at.dataframe[0].value
    assert list(outcomes["checkpoint"]) == ["sft_reflection", "rl"]
    assert set(outcomes["problem"]) == {p.display}
    # sft_reflection keeps its wrong first answer, rl resamples (README-worthy default)
    assert list(outcomes["verdicts"]) == ["STOP", "RESAMPLE → STOP"]
    # token views: legend, two episodes, Δ log-prob shading, Δ share shading (+ legend)
    assert len(at.html) >= 4
    assert any("data-pos" in h.value and "[STOP]" in h.value for h in at.html)
    charts = at.get("plotly_chart")
    assert len(charts) >= 5
    # the decision table has one row per decision per checkpoint, with both probabilities
    dec = next(d.value for d in at.dataframe if "p_STOP" in d.value.columns)
    assert set(dec["checkpoint"]) == {"sft_reflection", "rl"}
    assert dec[["p_STOP", "p_RESAMPLE"]].notna().all().all()
    # every table is downloadable
    assert sum(1 for b in at.get("download_button")) >= 5
    # the surrogate by default; KL (k3) against sft_reflection: sft_reflection's own gradient is
    # zero, which is said as a warning while rl's figures still show
    assert at.selectbox(key="cmp_objective").value == "surrogate"
    at.selectbox(key="cmp_objective").select("kl_k3").run()
    assert not at.exception
    assert at.selectbox(key="cmp_ref").value == "sft_reflection"  # rl's parent
    assert any("sft_reflection" in w.value and "zero" in w.value for w in at.warning)
    figs = next(d.value for d in at.dataframe if "ratio_SD" in d.value.columns)
    assert figs.set_index("checkpoint").loc["rl", "ratio_SD"] > 1


def test_controls_change_what_is_shown(data_dir):
    at = _compared()
    roles = next(d.value for d in at.dataframe if "mean_delta" in d.value.columns)
    # transcript from rl by default: rl's deltas are 0
    assert (roles[roles["checkpoint"] == "rl"]["mean_delta"] == 0).all()
    at.selectbox(key="cmp_source").select("sft_reflection").run()
    assert not at.exception
    roles2 = next(d.value for d in at.dataframe if "mean_delta" in d.value.columns)
    assert (roles2[roles2["checkpoint"] == "sft_reflection"]["mean_delta"] == 0).all()
    assert not (roles2[roles2["checkpoint"] == "rl"]["mean_delta"] == 0).all()
    # sft_reflection's transcript is wrong: the surrogate's default advantage is -1
    assert at.number_input(key="cmp_adv_sft_reflection").value == -1.0
    # another objective: the figures table changes
    fig1 = next(d.value for d in at.dataframe if "ratio_SD" in d.value.columns)
    at.selectbox(key="cmp_objective").select("dft").run()  # sft_sum would equal A = -1
    assert not at.exception and not at.error, _errors(at)
    fig2 = next(d.value for d in at.dataframe if "ratio_SD" in d.value.columns)
    assert not fig2["norm_G_S"].equals(fig1["norm_G_S"])
    assert fig2["error"].eq("").all()

    # the prompt toggle adds the prompt's bars to the Δ log-prob chart
    def n_prompt_bars():
        import json

        spec = json.loads(at.get("plotly_chart")[0].proto.spec)
        return sum(len(t["x"]) for t in spec["data"] if t.get("name") == "prompt")

    assert n_prompt_bars() == 0
    at.toggle(key="cmp_prompt").set_value(True).run()
    assert n_prompt_bars() > 0
    # a new problem only after pressing Compare again
    at.number_input(key="cmp_ts_index").set_value(9).run()
    assert any("changed since the comparison" in i.value for i in at.info)
    at.button(key="cmp_go").click().run()
    assert not at.exception
    assert set(at.dataframe[0].value["problem"]) == {fixed_set("3x4")[9].display}


@pytest.mark.parametrize(
    "kind, setup, word",
    [
        ("Typed", lambda at: at.text_input(key="cmp_text").input("what is the meaning of life?"), "cannot read"),
        ("Random of a size", lambda at: at.text_input(key="cmp_rnd_size").input("3x50"), "digit count"),
        ("Random of a size", lambda at: at.text_input(key="cmp_rnd_size").input("banana"), "cannot read size"),
    ],
)
def test_bad_problem_is_a_message(data_dir, kind, setup, word):
    at = _page().run()
    at.radio(key="cmp_src").set_value(kind).run()
    setup(at)
    at.button(key="cmp_go").click().run()
    assert not at.exception
    assert word in _errors(at)
    assert not at.header


def test_too_few_checkpoints_is_a_warning(data_dir):
    at = _page().run()
    at.multiselect(key="cmp_ckpts").set_value(["rl"]).run()
    at.button(key="cmp_go").click().run()
    assert not at.exception
    assert any("at least two" in w.value for w in at.warning)


def test_bad_checkpoint_dir_and_vocabulary_mismatch(data_dir, tmp_path, bpe_tokenizer):
    at = _page().run()
    at.text_input(key="cmp_extra").input(str(tmp_path / "nope")).run()
    assert not at.exception
    assert "not a checkpoint directory" in _errors(at)
    d = tmp_path / "bpe_model"
    save_checkpoint(
        d, init_model(bpe_tokenizer, "llama", hidden=32, layers=1, heads=2), bpe_tokenizer, Card(condition="bpe")
    )
    at.text_input(key="cmp_extra").input(str(d)).run()
    assert not at.exception and not at.error, _errors(at)
    at.multiselect(key="cmp_ckpts").set_value(["rl", "bpe_model"])
    at.number_input(key="cmp_attempts").set_value(1)
    at.button(key="cmp_go").click().run()
    assert not at.exception
    # both still sample (and show their outcome); teacher forcing is refused with the reason
    assert list(at.dataframe[0].value["checkpoint"]) == ["rl", "bpe_model"]
    assert "do not share a tokenizer vocabulary" in _errors(at)
    assert len(at.header) == 2


def test_two_chat_models_with_edited_prompt_settings(data_dir, tmp_path, chat_tokenizer):
    """A chat model and a perturbed copy (same tokenizer): both sample from the edited instruction,
    the transcript is teacher-forced through both, the attribution section is drawn."""
    import torch

    from ds_core.episodes.tasks import Problem
    from ui.services.episodes import with_prompt_settings

    model = init_model(chat_tokenizer, "qwen2", hidden=32, layers=1, heads=2)
    save_checkpoint(tmp_path / "chat_a", model, chat_tokenizer, Card(condition="a"))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    save_checkpoint(tmp_path / "chat_b", model, chat_tokenizer, Card(condition="b"))
    at = _page().run()
    for name in ("chat_a", "chat_b"):
        at.text_input(key="cmp_extra").input(str(tmp_path / name)).run()
    at.multiselect(key="cmp_ckpts").set_value(["chat_a", "chat_b"])
    at.number_input(key="cmp_attempts").set_value(1)
    at.number_input(key="cmp_max_new").set_value(9)  # random models write until the budget
    at.text_input(key="cmp_fmt_instruction").input("Compute {a} {word} {b}.").run()
    at.button(key="cmp_go").click().run()
    assert not at.exception and not at.error, _errors(at)
    assert "at most 9 new tokens" in " ".join(m.value for m in at.markdown)
    assert [h.value for h in at.header][:2] == ["Sampled episodes", "Teacher-forced on one transcript"]
    from ds_core.models.checkpoint import load_checkpoint

    (edited,) = with_prompt_settings(
        [load_checkpoint(tmp_path / "chat_a")], (("instruction", "Compute {a} {word} {b}."),)
    )
    assert "Compute 12 times 34." in chat_tokenizer.decode(edited.format.prompt_ids(chat_tokenizer, Problem(12, 34)))


def test_test_set_comparison_is_computed_once_and_read_back(data_dir):
    at = _compared()
    assert any(h.value.startswith("Over a test set") for h in at.header)
    at.text_input(key="cmp_ts_sizes").set_value("3x3, 3x5").run()
    at.number_input(key="cmp_ts_n").set_value(8).run()
    at.button(key="cmp_ts_go").click().run()
    assert not at.exception and not at.error
    summ = next(d.value for d in at.dataframe if "p(STOP | wrong attempt)" in d.value.columns)
    assert list(summ["model"]) == ["sft_reflection", "rl"]
    assert (summ["p(STOP | wrong attempt) lo"] <= summ["p(STOP | wrong attempt)"]).all()
    dis = next(d.value for d in at.dataframe if "differs from written" in d.value.columns)
    assert set(dis["attempt"]) <= {"correct", "wrong"} and (dis["lo"] <= dis["rate"]).all()
    # a fresh session reads it from the results store (no recomputation: the blob is there)
    from ds_core.store import ResultsStore

    store = ResultsStore(data_dir)
    assert any(True for _ in store._query("blobs", "SELECT 1 FROM blobs WHERE kind='verdict_comparison'"))  # noqa: SLF001
    at2 = _compared()
    at2.text_input(key="cmp_ts_sizes").set_value("3x3, 3x5").run()
    at2.number_input(key="cmp_ts_n").set_value(8).run()
    at2.button(key="cmp_ts_go").click().run()
    summ2 = next(d.value for d in at2.dataframe if "p(STOP | wrong attempt)" in d.value.columns)
    assert summ2.equals(summ)
    at2.text_input(key="cmp_ts_sizes").set_value("3x3-").run()
    assert at2.error and not at2.exception
