"""The Episode explorer page through Streamlit's AppTest: renders, runs an episode, the controls
change what is shown, bad input gives messages (never a traceback)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

REPO = Path(__file__).resolve().parents[2]
PAGE = str(REPO / "pages" / "1_Episode_explorer.py")


def _page() -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=120).run()
    assert not at.exception
    return at


def _run(at: AppTest) -> AppTest:
    at.button(key="ex_run").click().run()
    assert not at.exception
    return at


def _html(at) -> list[str]:
    return [h.proto.body for h in at.get("html")]


def _figures(at) -> list[dict]:
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def _titles(at) -> list[str]:
    out = []
    for f in _figures(at):
        t = f.get("layout", {}).get("title", {})
        out.append(t.get("text", "") if isinstance(t, dict) else str(t))
    return out


def _texts(at, kind: str) -> str:
    return " ".join(e.value for e in getattr(at, kind))


def test_renders_and_waits_for_a_run(data_dir):
    at = _page()
    assert at.title[0].value == "Episode explorer"
    assert [b.label for b in at.button] == ["Run episode"]
    assert "Run episode" in _texts(at, "info")
    assert not at.get("plotly_chart")


def test_run_shows_episode_figures_tables_and_decisions(data_dir):
    at = _run(_page())
    assert not at.error
    heads = [h.value for h in at.subheader]
    assert heads[0].startswith("328 × 5189 = 1701992") and "rl" in heads[0]  # 3x4 test problem 0
    assert {"Gradient attribution", "Per parameter group", "Decision tokens"} <= set(heads)
    html = _html(at)
    assert any('data-pos="0"' in h and "[STOP]" in h for h in html)  # the episode as tokens
    titles = _titles(at)
    assert "Decision vs sampling gradient per objective" in titles
    assert any(t.startswith("Per parameter group") for t in titles)
    assert any("attribution per segment" in t for t in titles)
    downloads = [d.label for d in at.get("download_button")]
    for name in (
        "attempts",
        "decision vs sampling figures",
        "parameter groups",
        "episode tokens",
        "input attribution per segment",
    ):
        assert f"Download {name} (CSV)" in downloads
    tokens = next(d.value for d in at.dataframe if "share[kl_k3]" in d.value.columns)
    assert abs(tokens["share[kl_k3]"].sum() - 1) < 1e-6
    # rl on an in-distribution problem: the GRPO group is all correct, A = 0, said so
    assert "A = 0" in _texts(at, "warning") or "A = +0" in _texts(at, "caption")
    assert "surrogate" in _texts(at, "caption")


@pytest.mark.slow
def test_controls_change_what_is_shown(data_dir):
    at = _run(_page())
    before = _html(at)
    at.selectbox(key="ex_objective_rl").select("dft").run()
    assert not at.exception
    assert any("DFT" in m.value and "share" in m.value for m in at.markdown)
    assert _html(at) != before
    at.radio(key="ex_view").set_value("alignment with G_D").run()
    assert not at.exception and any("alignment with G_D" in m.value for m in at.markdown)
    shaded = _html(at)
    at.radio(key="ex_shading").set_value("largest value").run()
    assert not at.exception and _html(at) != shaded
    # per-token gradient norms are computed on demand for the chosen objective
    at.radio(key="ex_view").set_value("norm").run()
    assert not at.exception and any("shaded by **norm**" in m.value for m in at.markdown)
    tokens = next(d.value for d in at.dataframe if "grad_norm[dft]" in d.value.columns)
    assert (tokens.loc[tokens["role"] != "prompt", "grad_norm[dft]"] > 0).all()
    assert tokens["grad_norm[kl_k3]"].isna().all()
    # a user advantage makes the surrogate attributable
    at.radio(key="ex_adv_src").set_value("my value").run()
    at.selectbox(key="ex_objective_rl").select("surrogate").run()
    assert not at.exception
    assert any("surrogate" in m.value and "shaded" in m.value for m in at.markdown)
    at.selectbox(key="ex_group_metric").select("cos_SD").run()
    assert any(t.startswith("Per parameter group: cos") for t in _titles(at))
    # no KL reference: the KL objectives are skipped with a reason
    at.selectbox(key="ex_ref_rl").select("none (skip the KL objectives)").run()
    assert not at.exception and "no KL reference" in _texts(at, "caption")
    # input attribution: another method
    at.radio(key="ex_ia_method").set_value("saliency").run()
    assert not at.exception and any(t.startswith("saliency") for t in _titles(at))


def test_counterfactual_beside_the_original(data_dir):
    at = _run(_page())
    assert at.button(key="ex_cf").label == "Force the opposite verdict"
    at.button(key="ex_cf").click().run()
    assert not at.exception and not at.error
    assert "forced after attempt 1" in _texts(at, "caption")  # the first decision is the default
    md = " ".join(m.value for m in at.markdown)
    original = "STOP" if "**Original** (STOP" in md else "RESAMPLE"
    forced = "RESAMPLE" if original == "STOP" else "STOP"
    assert f"**Counterfactual** ({forced} forced" in md
    cmp = next(d.value for d in at.dataframe if "counterfactual" in d.value.columns).set_index("")
    assert cmp.loc["decisions", "original"].split()[0] == original
    assert cmp.loc["decisions", "counterfactual"].split()[0] == forced
    # another decision token: the counterfactual of the first one is no longer shown
    if len(at.selectbox(key="ex_decision").options) > 1:
        sb = at.selectbox(key="ex_decision")
        sb.set_value(sorted(int(o.rsplit("token ", 1)[1].rstrip(")")) for o in sb.options)[1]).run()
        assert not at.exception and "**Counterfactual** (" not in " ".join(m.value for m in at.markdown)


def test_bad_inputs_are_messages(data_dir):
    at = _run(_page())
    at.radio(key="ex_source").set_value("typed").run()
    at.text_input(key="ex_text").input("what is the meaning of life?").run()
    assert not at.exception
    assert "cannot read" in _texts(at, "error")
    assert at.button(key="ex_run").disabled
    assert at.subheader[0].value.startswith("328 × 5189")  # the last episode stays on screen
    at.text_input(key="ex_text").input("123456789012345*2").run()
    assert not at.exception and "digits" in _texts(at, "error")
    at.radio(key="ex_source").set_value("random").run()
    at.text_input(key="ex_rsize").input("3x99").run()
    assert not at.exception and "out of range" in _texts(at, "error")
    at.text_input(key="ex_rsize").input("2+3").run()
    _run(at)
    assert not at.error and " + " in at.subheader[0].value


def test_base_checkpoint_has_no_default_reference(data_dir):
    at = _page()
    at.selectbox(key="ex_ckpt").select("base").run()
    _run(at)
    assert "No default" in _texts(at, "caption")
    # no reference, so no KL k3: the default objective is one the episode has, never an empty view
    assert "not attributed" not in _texts(at, "info")
    assert at.selectbox(key="ex_objective_base").value in ("surrogate", "sft_sum")
    assert any("shaded" in m.value for m in at.markdown)
    at.selectbox(key="ex_ref_base").select("sft").run()
    at.selectbox(key="ex_objective_base").select("kl_k3").run()
    assert not at.exception
    assert any("KL k3" in m.value and "shaded" in m.value for m in at.markdown)


def test_broken_user_checkpoint_is_a_message(data_dir, tmp_path):
    at = _page()
    gone = tmp_path / "gone"
    gone.mkdir()
    (gone / "config.json").write_text("{not json")
    at.session_state["user_checkpoints"] = [str(gone)]
    at.run()
    at.selectbox(key="ex_ckpt").select("gone").run()
    at.button(key="ex_run").click().run()
    assert not at.exception
    assert "Cannot load the checkpoint" in _texts(at, "error")
    assert "Run episode" in _texts(at, "info")  # nothing ran, the page still works


def test_a_model_without_decision_tokens(data_dir, tmp_path, bpe_tokenizer):
    """Any causal LM loads (text prompts, lexical-marker decisions); without a verdict nothing breaks."""
    from ds_core.models.checkpoint import Card, save_checkpoint
    from ds_core.models.model import init_model

    ck = tmp_path / "bpe"
    save_checkpoint(
        ck,
        init_model(bpe_tokenizer, "llama", hidden=32, layers=1, heads=2),
        bpe_tokenizer,
        Card(condition="bpe-random"),
    )
    at = _page()
    at.session_state["user_checkpoints"] = [str(ck)]
    at.run()
    at.selectbox(key="ex_ckpt").select("bpe").run()
    at.number_input(key="ex_attempts").set_value(1).run()
    _run(at)
    assert not at.error
    assert at.subheader[0].value.startswith("328 × 5189") and "bpe-random" in at.subheader[0].value
    assert "No default" in _texts(at, "caption")
    # a random model never reaches a verdict: said once, per-objective reasons grouped, no flip button
    assert "never reached a verdict" in _texts(at, "warning")
    assert "No decision token in this episode" in _texts(at, "info")
    assert _texts(at, "caption").count("the episode has no decision tokens") == 1
    assert [b.key for b in at.button] == ["ex_run"]


def test_prompt_settings_on_a_chat_model(data_dir, tmp_path, chat_tokenizer):
    """A chat-template model samples from the edited instruction (the run is keyed by it); a DS
    checkpoint with edited prompt settings gets a one-line message."""
    from ds_core.models.checkpoint import Card, save_checkpoint
    from ds_core.models.model import init_model

    ck = tmp_path / "chat"
    save_checkpoint(ck, init_model(chat_tokenizer, "qwen2", hidden=32, layers=1, heads=2), chat_tokenizer, Card("chat"))
    at = _page()
    at.session_state["user_checkpoints"] = [str(ck)]
    at.run()
    at.selectbox(key="ex_ckpt").select("chat").run()
    at.number_input(key="ex_attempts").set_value(1).run()
    at.text_input(key="ex_fmt_instruction").input("Compute {a} {word} {b}.").run()
    _run(at)
    assert not at.exception and not at.error
    assert at.subheader[0].value.endswith("chat")
    at.selectbox(key="ex_ckpt").select("rl").run()
    _run(at)
    assert any("text-format checkpoints" in e.value for e in at.error)
    # the page's checkpoint for those settings prompts with the edited instruction
    from ds_core.episodes.tasks import Problem
    from ds_core.models.checkpoint import content_hash
    from ui.views.explorer_work import checkpoint_of

    fmt = (("instruction", "Compute {a} {word} {b}."),)
    edited = checkpoint_of(str(ck), content_hash(ck), fmt)
    prompt = chat_tokenizer.decode(edited.format.prompt_ids(chat_tokenizer, Problem(12, 34)))
    assert "<|im_start|>user\nCompute 12 times 34.<|im_end|>" in prompt


def test_max_new_tokens_caps_the_episode(data_dir, tmp_path, chat_tokenizer):
    """A random chat model writes until its budget (256 tokens an attempt); the cap ends it at 7,
    flagged as truncated, and the cap is part of the run's key."""
    from ds_core.models.checkpoint import Card, save_checkpoint
    from ds_core.models.model import init_model

    ck = tmp_path / "chat"
    save_checkpoint(ck, init_model(chat_tokenizer, "qwen2", hidden=32, layers=1, heads=2), chat_tokenizer, Card("chat"))
    at = _page()
    at.session_state["user_checkpoints"] = [str(ck)]
    at.run()
    at.selectbox(key="ex_ckpt").select("chat").run()
    at.number_input(key="ex_attempts").set_value(1).run()
    at.number_input(key="ex_max_new").set_value(7).run()
    _run(at)
    assert not at.exception and not at.error, [e.value for e in at.error]
    tokens = {m.label: m.value for m in at.metric}["Generated tokens"]
    assert int(tokens) <= 7
    if int(tokens) == 7:
        assert "truncated" in _texts(at, "warning")
    assert at.session_state["ex_request"]["cfg"] == (1.0, 1.0, 1, 7)


def test_attribution_restricted_to_parameter_groups(data_dir):
    """The 'Parameters' spec restricts every figure to those parameters and says so; a spec that
    selects nothing is a message and the page keeps the episode."""
    at = _run(_page())
    full = _texts(at, "caption")
    assert "Every figure below covers all " in full
    at.text_input(key="ex_params").input("last:1,head").run()
    assert not at.exception and not at.error
    caps = _texts(at, "caption")
    assert "covers last:1,head: " in caps and "the rest held fixed" in caps
    at.text_input(key="ex_params").input("layer.99.attn").run()
    assert not at.exception and "selects nothing" in _texts(at, "error")
    assert at.subheader[0].value.startswith("328 × 5189")


def test_chat_model_segmentation_and_forced_revision(data_dir, tmp_path, chat_tokenizer):
    """A chat model that ends its turn at once: the segmentation table opens with the attempt and
    its stop, the decision section offers 'Force a revision', and clicking it writes the revision
    sentence and shows the continuation beside the original."""
    import torch

    from ds_core.models.checkpoint import Card, save_checkpoint
    from ds_core.models.model import init_model

    model = init_model(chat_tokenizer, "qwen2", hidden=32, layers=1, heads=2)
    end = chat_tokenizer.convert_tokens_to_ids("<|im_end|>")
    with torch.no_grad():  # <|im_end|> by far the likeliest token: every turn ends at once
        model.lm_head.weight[end] += 50 * model.lm_head.weight.abs().max()
    ck = tmp_path / "eager-chat"
    save_checkpoint(ck, model, chat_tokenizer, Card("chat"))
    at = _page()
    at.session_state["user_checkpoints"] = [str(ck)]
    at.run()
    at.selectbox(key="ex_ckpt").select("eager-chat").run()
    _run(at)
    assert not at.exception
    assert "resample markers" in _texts(at, "caption")
    seg = [d for d in at.dataframe if "segment" in d.value.columns][0].value
    assert list(seg["segment"]) == ["attempt 1", "decision after attempt 1"] and seg["verdict"][1] == "STOP"
    assert at.button(key="ex_cf").label == "Force a revision"
    at.button(key="ex_cf").click().run()
    assert not at.exception and not at.error
    assert "'Wait, let me check that again.' was written there" in _texts(at, "caption")
    # Q-values on a text model: from continuations after the revision sentence, p(STOP) left blank
    at.number_input(key="ex_q_n").set_value(2).run()
    at.button(key="ex_q_go").click().run()
    assert not at.exception and not at.error
    assert "after a revision sentence" in " ".join(m.value for m in at.markdown)
    vals = next(d.value for d in at.dataframe if "q_resample" in d.value.columns)
    assert len(vals) == 1 and vals["n"].iloc[0] == 2 and vals["p_stop"].isna().all()


def test_group_view_is_the_group_the_advantage_came_from(data_dir):
    at = _run(_page())
    assert not at.get("toggle") or not at.toggle(key="ex_group_on").value  # off until asked
    at.toggle(key="ex_group_on").set_value(True).run()
    assert not at.exception and not at.error
    eps = next(d.value for d in at.dataframe if "A" in d.value.columns and "verdicts" in d.value.columns)
    assert len(eps) == 1 + 8 and eps["episode"].iloc[0] == 1  # this episode + the 8 fresh rollouts
    tokens = int(next(m.value for m in at.metric if m.label == "Generated tokens"))
    assert eps["tokens"].iloc[0] == tokens
    # rl on its in-distribution default: every rollout correct, so A = 0 and the page says what that means
    if eps["correct"].all():
        assert "cannot appear" in " ".join(m.value for m in at.markdown)
        assert "A = 0" in _texts(at, "warning")


def test_q_values_beside_each_verdict(data_dir):
    at = _run(_page())
    at.number_input(key="ex_q_n").set_value(4).run()
    at.button(key="ex_q_go").click().run()
    assert not at.exception and not at.error
    vals = next(d.value for d in at.dataframe if "q_resample" in d.value.columns)
    assert len(vals) >= 1 and set(vals["q_stop"]) <= {0.0, 1.0}
    assert ((vals["q_resample_lo"] <= vals["q_resample"]) & (vals["q_resample"] <= vals["q_resample_hi"])).all()
    assert any("Q(STOP) =" in c.value or "retry cap" in c.value for c in at.caption)
    if not vals["at_cap"].all():  # the continuations behind an estimate, one at a time
        row = vals[~vals["at_cap"]].iloc[0]
        shown = [c.value for c in at.caption if c.value.startswith("Continuation 1 of 4")]
        assert shown and ("correct" in shown[0])
        at.number_input(key="ex_q_j").set_value(4).run()
        assert not at.exception and any(c.value.startswith("Continuation 4 of 4") for c in at.caption)
        assert int(row.k) <= 4
