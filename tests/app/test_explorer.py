"""ui.services.explorer (the episode explorer's service) against direct ds_core calls, on the shipped
checkpoints, and its chart builders (ui.charts.explorer)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

import ui.services.explorer as ex
from ds_core.attribution.cache import cache_key
from ds_core.attribution.gradient import attribute, grpo_advantage
from ds_core.attribution.inputs import input_attribution
from ds_core.attribution.reference import reference_for
from ds_core.episodes.episode import RESAMPLE, STOP
from ds_core.episodes.tasks import Problem, pick_problem
from ds_core.episodes.tasks import test_set as fixed_set
from ds_core.models.checkpoint import load_checkpoint
from ds_core.models.rollout import rollout
from ds_core.models.sampling import Prefix, SamplingConfig
from ds_core.paths import SHIPPED_DIR
from ds_core.store import ResultsStore
from ui.charts import explorer as charts
from ui.services.episodes import segment_label

GREEDY = SamplingConfig(temperature=0.0, max_attempts=4)
PROBLEM = fixed_set("3x3")[0]


@pytest.fixture(scope="module")
def rl():
    return load_checkpoint(SHIPPED_DIR / "rl")


@pytest.fixture(scope="module")
def ref():
    return load_checkpoint(SHIPPED_DIR / "sft_reflection")


@pytest.fixture(scope="module")
def episode(rl):
    return ex.run_episode(rl, PROBLEM, GREEDY, seed=0)


@pytest.fixture(scope="module")
def atts(rl, ref, episode):
    return ex.attribute_objectives(rl, episode, ex.OBJECTIVE_NAMES, advantage=1.0, ref=ref)


# ------------------------------------------------------------------------------- problems, episodes
def test_sampling_config_validates():
    assert ex.sampling_config(0.7, 0.9, 3) == SamplingConfig(temperature=0.7, top_p=0.9, max_attempts=3)
    assert ex.sampling_key(1, 1, 4) == (1.0, 1.0, 4)
    assert ex.sampling_key(1, 1, 4, 0) == (1.0, 1.0, 4)  # 0: the format's budget
    assert ex.sampling_key(1, 1, 4, 64) == (1.0, 1.0, 4, 64)
    assert ex.sampling_config(*ex.sampling_key(1, 1, 4, 64)).max_new_tokens == 64
    for args in (
        (-1, 1, 4),
        (1, 0, 4),
        (1, 1, 0),
        (1, 1, ex.MAX_ATTEMPTS + 1),
        ("hot", 1, 4),
        (math.nan, 1, 4),
        (1e9, 1, 4),
        (1, 1, 4, -3),
    ):
        with pytest.raises(ex.ExplorerError):
            ex.sampling_config(*args)


def test_the_service_imports_without_model_code():
    """The page's controls (its cold start) need no torch: model code is imported on first use."""
    import subprocess
    import sys

    code = (
        "import sys, ui.services.explorer as ex, ds_core.episodes.tasks as t; t.pick_problem('typed', text='12*34'); "
        "ex.sampling_key(1, 1, 4); assert 'torch' not in sys.modules, 'torch imported'"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    from ds_core.attribution.input_methods import INPUT_METHODS as METHODS
    from ds_core.attribution.inputs import METHODS as REAL

    assert set(METHODS) == set(REAL) == set(ex.INPUT_METHODS.values())


def test_shading_scale():
    v = [0.0, 1.0, 2.0, 3.0, 100.0, math.nan, -4.0]
    assert ex.shading_scale(v, "largest value") is None
    assert ex.shading_scale(v, "95th percentile") == pytest.approx(
        float(np.percentile([1.0, 2.0, 3.0, 4.0, 100.0], 95))
    )
    assert ex.shading_scale([0.0, math.nan], "95th percentile") is None
    with pytest.raises(ex.ExplorerError):
        ex.shading_scale(v, "loud")


def test_run_episode_is_the_rollout(rl, episode):
    direct = rollout(rl.model, rl.tokenizer, rl.format, [PROBLEM], GREEDY, seed=0)[0]
    assert episode.token_ids == direct.token_ids
    sampled = ex.run_episode(rl, PROBLEM, SamplingConfig(), seed=3)
    direct = rollout(rl.model, rl.tokenizer, rl.format, [PROBLEM], SamplingConfig(), seed=3)[0]
    assert sampled.token_ids == direct.token_ids


def test_episode_frames(episode):
    df = ex.episode_frame(episode)
    assert len(df) == len(episode.token_ids)
    assert list(df["role"]) == list(episode.roles)
    assert list(df["segment"]) == [segment_label(x) for x in episode.segments]  # attempts from 1
    assert set(df.loc[df["role"] == "prompt", "attempt"]) == {0}  # outside attempts (attempts count from 1)
    assert set(df.loc[df["segment"] == "attempt 1", "attempt"]) == {1}
    assert segment_label("decision:0") == "decision after attempt 1" and segment_label("prompt") == "prompt"
    att = ex.attempts_frame(episode)
    assert len(att) == episode.n_attempts
    assert list(att["verdict"]) == [episode.verdict_after(a.index) or "(none)" for a in episode.attempts]
    summ = ex.episode_summary(episode)
    assert summ["answer"] == PROBLEM.answer and summ["attempts"] == episode.n_attempts
    choices = ex.decision_choices(episode)
    assert [p for p, _ in choices] == episode.positions("decision")


def test_reference_for_shipped_checkpoints(rl):
    path, note = reference_for(rl)
    assert path is not None and path.endswith("sft_reflection") and "parent" in note
    base = SimpleNamespace(card=load_checkpoint(SHIPPED_DIR / "base").card, path=SHIPPED_DIR / "base")
    path, note = reference_for(base)
    assert path is None and "no parent" in note


# ------------------------------------------------------------------------------- attribution
def test_figures_match_direct_attribute(rl, ref, episode, atts):
    assert set(atts.results) == set(ex.OBJECTIVE_NAMES) and not atts.skipped
    figs = ex.figures_frame(atts).set_index("objective")
    for obj in ("surrogate", "kl_k3", "dft"):
        direct = attribute(rl, episode, obj, advantage=1.0, ref_model=ref, norms=False)
        row = figs.loc[obj]
        assert row["ratio_SD"] == pytest.approx(direct.figures.ratio_SD, rel=1e-9)
        assert row["norm_G_D"] == pytest.approx(direct.figures.norm_G_D, rel=1e-9)
        assert row["cos_SD"] == pytest.approx(direct.figures.cos_SD, rel=1e-9, abs=1e-12)
        assert row["n_D"] == len(episode.positions("decision"))
    # shares of each role add to 1; on-policy surrogate, k1 and token-sum SFT are all +-A grad log p
    assert (figs[["share_S", "share_D", "share_O"]].sum(axis=1) - 1).abs().max() < 1e-6
    assert figs.loc["surrogate", "ratio_SD"] == pytest.approx(figs.loc["sft_sum", "ratio_SD"], rel=1e-5)


def test_groups_frame_has_a_model_row_per_objective(atts):
    g = ex.groups_frame(atts)
    figs = ex.figures_frame(atts).set_index("objective")
    model = g[g["group"] == "model"].set_index("objective")
    assert set(model.index) == set(ex.OBJECTIVE_NAMES)
    np.testing.assert_allclose(model.loc[figs.index, "ratio_SD"], figs["ratio_SD"], rtol=1e-12)
    layers = g[(g["objective"] == "kl_k3") & g["group"].str.startswith("layer.")]
    assert len(layers) == 8  # 4 layers x (attn, mlp)
    assert g[g["objective"] == "kl_k3"]["n_params"].iloc[:-1].sum() == model.loc["kl_k3", "n_params"]


def test_token_table_and_views(episode, atts):
    tt = ex.token_table(episode, atts)
    assert len(tt) == len(episode.token_ids)
    for obj in ex.OBJECTIVE_NAMES:
        assert tt[f"share[{obj}]"].sum() == pytest.approx(1.0, abs=1e-5)  # float32 JVP products
        assert (tt.loc[tt["role"] == "prompt", f"share[{obj}]"] == 0).all()
        assert tt[f"grad_norm[{obj}]"].isna().all()  # norms=False
    vf = ex.view_frame(episode, atts, "kl_k3", "alignment with G_D")
    np.testing.assert_array_equal(vf["value"], tt["align_D[kl_k3]"])
    missing = ex.view_frame(episode, ex.Attributions(), "kl_k3", "share")
    assert missing["value"].isna().all()
    with pytest.raises(ex.ExplorerError):
        ex.view_frame(episode, atts, "kl_k3", "sideways")


def test_norms_on_demand_match_direct(rl, episode):
    a = ex.attribute_objectives(rl, episode, ["sft_mean"], advantage=None, norms_for=["sft_mean"])
    direct = attribute(rl, episode, "sft_mean", norms=True)
    np.testing.assert_allclose(a.results["sft_mean"].grad_norm, direct.grad_norm, rtol=1e-5, atol=1e-9)
    vf = ex.view_frame(episode, a, "sft_mean", "norm")
    assert (vf.loc[vf["role"] != "prompt", "value"] > 0).all()


def test_missing_inputs_and_zero_gradient_are_skipped_with_reasons(rl, episode):
    a = ex.attribute_objectives(rl, episode, ["surrogate", "kl_k1", "sft_sum"], advantage=None, ref=None)
    assert set(a.results) == {"sft_sum"}
    assert "advantage" in a.skipped["surrogate"] and "reference" in a.skipped["kl_k1"]
    zero = ex.attribute_objectives(rl, episode, ["surrogate"], advantage=0.0)
    assert "zero" in zero.skipped["surrogate"]
    with pytest.raises(ex.ExplorerError):
        ex.attribute_objectives(rl, episode, ["nope"], advantage=1.0)


def test_results_store_serves_the_second_call(rl, episode, tmp_path):
    store = ResultsStore(tmp_path / "data")
    first = ex.attribute_objectives(rl, episode, ["dft"], advantage=None, store=store)
    assert store.get_blob("attribution", cache_key(rl, episode, "dft", norms=False)) is not None
    second = ex.attribute_objectives(rl, episode, ["dft"], advantage=None, store=store)
    assert second.results["dft"].share == first.results["dft"].share


def test_group_advantage_is_grpo_advantage(rl, episode):
    a = ex.group_advantage(rl, episode, GREEDY, n=4, seed=2)
    direct = grpo_advantage(rl.model, rl.tokenizer, rl.format, episode, n=4, seed=ex.GROUP_SEED_OFFSET + 2, cfg=GREEDY)
    assert a == direct
    with pytest.raises(ex.ExplorerError):
        ex.group_advantage(rl, episode, GREEDY, n=0)


# ------------------------------------------------------------------------------- decisions
def test_decision_input_attribution_matches_direct(rl, episode):
    pos = episode.positions("decision")[0]
    res = ex.decision_input_attribution(rl, episode, pos, "input_x_gradient")
    direct = input_attribution(
        rl.model, rl.tokenizer, episode, method="input_x_gradient", target="contrastive", targets=[pos]
    )
    np.testing.assert_allclose(res.matrix, direct.matrix, rtol=1e-6, atol=1e-9)
    tokens, segs = ex.input_frames(res, pos)
    assert (tokens.loc[tokens["pos"] >= pos, "attribution"] == 0).all()
    assert segs["attribution"].sum() == pytest.approx(res.matrix[0].sum(), rel=1e-9)
    assert list(segs["segment"])[:2] == ["prompt", "attempt 1"]
    assert list(segs["role"])[:2] == ["prompt", "sampling"]
    ig = ex.decision_input_attribution(rl, episode, pos, "ig", n_steps=8)
    assert ig.deltas is not None and ig.params["n_steps"] == 8


@pytest.mark.parametrize("bad", [0, 1, -1, 10_000, "7", True])
def test_decision_input_attribution_refuses_non_decision_positions(rl, episode, bad):
    with pytest.raises(ex.ExplorerError):
        ex.decision_input_attribution(rl, episode, bad)


def test_decision_input_attribution_refuses_bad_settings(rl, episode):
    pos = episode.positions("decision")[0]
    with pytest.raises(ex.ExplorerError, match="method"):
        ex.decision_input_attribution(rl, episode, pos, "magic")
    with pytest.raises(ex.ExplorerError, match="IG steps"):
        ex.decision_input_attribution(rl, episode, pos, "ig", n_steps=0)


def test_counterfactual_forced_stop_ends_the_episode(rl):
    ep = ex.run_episode(rl, fixed_set("3x5")[0], SamplingConfig(), seed=0)  # RESAMPLE, then STOP
    k = next(i for i, d in enumerate(ep.decisions) if d.verdict == RESAMPLE)
    d = ep.decisions[k]
    cf = ex.counterfactual(rl, ep, k, SamplingConfig(), seed=0)
    assert (cf.original, cf.forced, cf.position) == (RESAMPLE, STOP, d.start)
    assert cf.episode.token_ids[: d.start] == ep.token_ids[: d.start]
    assert len(cf.episode.token_ids) == d.start + 1
    assert cf.episode.decisions[-1].verdict == STOP
    assert cf.episode.final_answer == ep.attempts[d.index].answer
    table = ex.comparison_frame(ep, cf)
    assert list(table.columns) == ["", "original", "counterfactual"]


def test_counterfactual_forced_resample_rolls_on(rl, episode):
    k = len(episode.decisions) - 1
    d = episode.decisions[k]
    assert d.verdict == STOP
    cf = ex.counterfactual(rl, episode, k, GREEDY, seed=0)
    assert cf.forced == RESAMPLE
    assert cf.episode.token_ids[: d.start] == episode.token_ids[: d.start]
    assert cf.episode.verdict_after(d.index) == RESAMPLE
    assert cf.episode.n_attempts > episode.n_attempts
    # the same as rolling the prefix directly
    prefix = tuple(episode.token_ids[: d.start]) + (rl.tokenizer.convert_tokens_to_ids("[RESAMPLE]"),)
    direct = rollout(rl.model, rl.tokenizer, rl.format, [Prefix(PROBLEM, prefix, episode.prompt_len)], GREEDY, seed=0)[
        0
    ]
    assert cf.episode.token_ids == direct.token_ids


def test_counterfactual_raises_the_cap_for_the_extra_attempt(rl):
    cfg = SamplingConfig(temperature=0.0, max_attempts=1)
    ep = ex.run_episode(rl, PROBLEM, cfg, seed=0)
    cf = ex.counterfactual(rl, ep, 0, cfg, seed=0)
    assert cf.max_attempts == 2 and "raised" in cf.note
    assert cf.episode.n_attempts == 2


def test_counterfactual_refusals(rl, episode, bpe_tokenizer):
    for bad in (-1, len(episode.decisions), "0", None):
        with pytest.raises(ex.ExplorerError):
            ex.counterfactual(rl, episode, bad, GREEDY)
    other = SimpleNamespace(tokenizer=bpe_tokenizer, model=None, format=None)
    assert not ex.has_decision_tokens(other) and ex.has_decision_tokens(rl)
    # (a lexical-marker model's counterfactuals are sentences: test_text_model_force_a_*)
    with pytest.raises(ex.ExplorerError, match="contrastive"):
        ex.decision_input_attribution(other, episode, episode.positions("decision")[0])


# ------------------------------------------------------------------------------- charts
def test_charts_from_real_frames(rl, episode, atts):
    figs = ex.figures_frame(atts)
    f = charts.decision_sampling_figure(figs)
    assert len(f.data) == 7 and list(f.data[0].x) == list(figs["label"])
    assert list(f.data[0].y) == pytest.approx(list(figs["norm_G_S"]))
    shares = [t for t in f.data if t.name.startswith("share")]  # sampling and decision, side by side
    assert [list(t.y) for t in shares] == [pytest.approx(list(figs["share_S"])), pytest.approx(list(figs["share_D"]))]
    assert f.layout.yaxis.exponentformat == "power" and f.layout.yaxis.dtick >= 1  # 10^k at the decades
    for metric in charts.HEATMAP_METRICS:
        h = charts.groups_heatmap(ex.groups_frame(atts), metric)
        assert list(h.data[0].y)[-1] == "model" and list(h.data[0].x) == list(ex.OBJECTIVE_NAMES)
    h = charts.groups_heatmap(ex.groups_frame(atts), "ratio_SD")
    z = np.array(h.data[0].z, dtype=float)
    assert z[-1, 0] == pytest.approx(math.log10(figs.set_index("objective").loc["surrogate", "ratio_SD"]))
    pos = episode.positions("decision")[0]
    tokens, segs = ex.input_frames(ex.decision_input_attribution(rl, episode, pos, "saliency"), pos)
    s = charts.segment_figure(segs)
    assert list(s.data[0].x) == list(segs["segment"])
    t = charts.token_figure(ex.view_frame(episode, atts, "dft", "share"), "value", "t")
    assert sum(len(tr.x) for tr in t.data) == len(episode.token_ids)


def test_charts_survive_empty_and_non_finite_input():
    empty = pd.DataFrame(columns=list(ex.FIGURE_COLUMNS))
    assert charts.decision_sampling_figure(empty).layout.annotations
    assert charts.groups_heatmap(pd.DataFrame(columns=list(ex.GROUP_COLUMNS))).layout.annotations
    row = {c: 1.0 for c in ex.FIGURE_COLUMNS}
    row.update(objective="x", label="x", norm_G_D=0.0, ratio_SD=math.inf, cos_SD=math.nan)
    f = charts.decision_sampling_figure(pd.DataFrame([row]))
    assert f.data[1].y == (None,) and f.data[2].y == (None,)
    g = pd.DataFrame([{**{c: 1.0 for c in ex.GROUP_COLUMNS}, "objective": "x", "group": "model", "ratio_SD": math.inf}])
    assert np.isnan(np.array(charts.groups_heatmap(g).data[0].z, dtype=float)).all()
    with pytest.raises(ValueError):
        charts.groups_heatmap(g, "nonsense")
    assert charts.segment_figure(
        pd.DataFrame(columns=["segment", "role", "attribution", "abs_attribution", "tokens"])
    ).layout.annotations
    assert charts.token_figure(
        pd.DataFrame({"pos": [0], "token": ["a"], "role": ["prompt"], "value": [math.nan]}), "value", "t"
    ).layout.annotations


def test_problem_is_plain_data():
    # the page keys its caches on (a, b, op) tuples
    p = pick_problem("typed", text="12 + 345")
    assert Problem(p.a, p.b, p.op) == p


def test_an_episode_without_decisions(rl, episode):
    d = episode.decisions[0]
    cut = rl.format.parse(PROBLEM, list(episode.token_ids[: d.start]), episode.prompt_len, rl.tokenizer)
    assert not cut.decisions and ex.decision_choices(cut) == []
    # ds_core.attribution refuses it (no sampling:decision split): a reason, not an exception
    a = ex.attribute_objectives(rl, cut, ["sft_sum", "dft"], advantage=None)
    assert not a.results and all("no decision tokens" in why for why in a.skipped.values())
    figs = ex.figures_frame(a)
    assert figs.empty and charts.decision_sampling_figure(figs).layout.annotations
    assert ex.view_frame(cut, a, "sft_sum", "share")["value"].isna().all()
    with pytest.raises(ex.ExplorerError, match="does not exist"):
        ex.counterfactual(rl, cut, 0, GREEDY)


def test_skipped_lines_group_objectives_by_reason():
    a = ex.Attributions({}, {"kl_k1": "no ref", "kl_k3": "no ref", "surrogate": "zero"})
    assert ex.skipped_lines(a) == ["KL k1, KL k3: no ref", "surrogate: zero"]
    assert ex.skipped_lines(ex.Attributions()) == []


# ------------------------------------------------------------------ text models: segmentation, counterfactuals
def _chat_ckpt(chat_tokenizer, markers=None):
    from types import SimpleNamespace

    from ds_core.episodes.formats import format_for
    from ds_core.episodes.text_format import customized
    from ds_core.models.model import init_model

    fmt = format_for(chat_tokenizer)
    if markers:
        fmt = customized(fmt, chat_tokenizer, resample_markers=markers)
    model = init_model(chat_tokenizer, "qwen2", hidden=32, layers=1, heads=2)
    return SimpleNamespace(model=model, tokenizer=chat_tokenizer, format=fmt, hash="x", name="chat")


def _chat_episode(ck, generated: str):
    from ds_core.episodes.tasks import Problem

    tok, p = ck.tokenizer, Problem(12, 34)
    prompt = ck.format.prompt_ids(tok, p)
    ids = prompt + tok.encode(generated, add_special_tokens=False) + [tok.convert_tokens_to_ids("<|im_end|>")]
    return ck.format.parse(p, ids, len(prompt), tok)


def test_segmentation_frame_lists_attempts_and_decision_spans_in_order(chat_tokenizer):
    ck = _chat_ckpt(chat_tokenizer)
    ep = _chat_episode(ck, "12 times 34 is 418. Wait, let me recompute that. So it is 408.")
    seg = ex.segmentation_frame(ep, chat_tokenizer)
    assert list(seg["segment"]) == ["attempt 1", "decision after attempt 1", "attempt 2", "decision after attempt 2"]
    assert list(seg["verdict"]) == ["", "RESAMPLE", "", "STOP"]
    assert seg["text"][1].strip() == "Wait, let me recompute that." and seg["text"][3] == "<|im_end|>"
    assert seg["answer read"][0] == 418 and seg["answer read"][2] == 408 and bool(seg["correct"][2])


def test_text_model_force_a_stop_ends_the_turn_where_it_revised(chat_tokenizer):
    ck = _chat_ckpt(chat_tokenizer)
    ep = _chat_episode(ck, "12 times 34 is 418. Wait, let me recompute that. So it is 408.")
    cf = ex.counterfactual(ck, ep, 0, ex.sampling_config(0.7, 1.0, 3), seed=0)
    assert (cf.original, cf.forced) == ("RESAMPLE", "STOP") and "stop forced after attempt 1" in cf.note
    assert [d.verdict for d in cf.episode.decisions] == ["STOP"]
    assert cf.episode.final_answer == 418 and not cf.episode.correct
    assert cf.episode.token_ids[-1] == chat_tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert cf.episode.token_ids[:-1] == ep.token_ids[: ep.decisions[0].start]


@pytest.mark.parametrize("markers,sentence", [(None, "Wait, let me check that again."), ("hmm", "Hmm, let me")])
def test_text_model_force_a_revision_writes_a_marker_sentence_and_continues(chat_tokenizer, markers, sentence):
    ck = _chat_ckpt(chat_tokenizer, markers)
    ep = _chat_episode(ck, "12 times 34 is 408.")
    assert [d.verdict for d in ep.decisions] == ["STOP"]
    cfg = ex.sampling_config(0.7, 1.0, 2)
    cf = ex.counterfactual(ck, ep, 0, type(cfg)(**{**cfg.__dict__, "max_new_tokens": 6}), seed=0)
    assert (cf.original, cf.forced) == ("STOP", "RESAMPLE") and sentence in cf.note
    text = chat_tokenizer.decode(list(cf.episode.token_ids[ep.prompt_len :]))
    assert text.startswith("12 times 34 is 408. " + sentence)
    assert cf.episode.decisions[0].verdict == "RESAMPLE" and cf.episode.attempts[0].answer == 408
    assert len(cf.episode.token_ids) > ep.decisions[0].start + 6  # the model wrote on


def test_text_model_revision_uses_the_users_marker(chat_tokenizer):
    """With markers that do not include 'wait', the revision sentence is built from the user's own
    marker, so the tagger reads it as a revision."""
    ck = _chat_ckpt(chat_tokenizer, "zzqx")
    ep = _chat_episode(ck, "12 times 34 is 408.")
    cfg = ex.sampling_config(0.7, 1.0, 2)
    cf = ex.counterfactual(ck, ep, 0, type(cfg)(**{**cfg.__dict__, "max_new_tokens": 3}), seed=0)
    assert "Zzqx, let me check that again." in cf.note and cf.episode.decisions[0].verdict == "RESAMPLE"


def test_text_model_q_values_come_from_a_forced_revision_sentence(chat_tokenizer):
    """Q(STOP) is the attempt's answer read by the readers; Q(RESAMPLE) the share of continuations
    written after the revision sentence that end correct (greedy: all agree with one rollout);
    p(STOP) is undefined (a sentence, not a token); the regret, which needs tokens, refuses."""
    import math

    from ds_core.analysis import decisions as D
    from ds_core.analysis.regret import regret_run
    from ds_core.episodes.forcing import revision_ids
    from ds_core.models.rollout import rollout
    from ds_core.models.sampling import Prefix

    ck = _chat_ckpt(chat_tokenizer)
    ep = _chat_episode(ck, "12 times 34 is 418. Wait, let me recompute that. So it is 408.")
    greedy = type(GREEDY)(**{**GREEDY.__dict__, "max_new_tokens": 8, "max_attempts": 3})
    vals = D.decision_values(ck, [ep], greedy, n=3, seed=0)
    assert list(vals["chosen"]) == ["RESAMPLE", "STOP"] and list(vals["q_stop"]) == [0.0, 1.0]
    assert vals["p_stop"].map(math.isnan).all()
    assert all(math.isnan(r.p_optimal) or r.optimal == "either" for r in vals.itertuples())
    for r in vals.itertuples():
        d = ep.decisions[r.attempt - 1]
        ids, _ = revision_ids(ck, ep, d)
        one = rollout(ck.model, ck.tokenizer, ck.format, [Prefix(ep.problem, tuple(ids), ep.prompt_len)], greedy)[0]
        assert r.k in (0, 3) and r.q_resample == float(one.correct)
    conts = D.continuations(ck, ep, 1, greedy, n=3)
    assert len(conts) == 3 and all("Wait, let me check that again." in c.text for c in conts)
    with pytest.raises(D.DecisionValueError, match="needs DS-Lens' format"):
        regret_run(ck, ["3x3"], n_problems=2, n=2)
