"""ui.services.compare, compare_teacher_forcing and compare_attribution: sampling on the same seed,
teacher forcing, Δ attribution, against direct calls."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ds_core.attribution.gradient import attribute
from ds_core.attribution.reference import parent_among
from ds_core.episodes.tasks import Problem
from ds_core.episodes.tasks import test_set as fixed_set
from ds_core.episodes.tokenizer import decision_token_ids
from ds_core.models.checkpoint import Card, load_checkpoint, save_checkpoint
from ds_core.models.locks import MODEL_LOCK
from ds_core.models.model import init_model
from ds_core.models.rollout import rollout
from ds_core.models.sampling import SamplingConfig
from ds_core.objectives.terms import token_logprobs
from ds_core.paths import SHIPPED_DIR
from ds_core.store import ResultsStore
from ui.services.compare import CompareError, outcome_frame, sample_all, sample_episode, vocab_problem
from ui.services.compare_attribution import attribute_one, compare_attribution, default_advantage
from ui.services.compare_teacher_forcing import GENERATED, cross_likelihood, score, teacher_force, teacher_force_scores
from ui.services.episodes import episode_frame, verdicts_text

CFG = SamplingConfig(max_attempts=2)


@pytest.fixture(scope="module")
def ckpts():
    return {n: load_checkpoint(SHIPPED_DIR / n) for n in ("sft_reflection", "rl")}


@pytest.fixture(scope="module")
def episodes(ckpts):
    # sft_reflection keeps a wrong first answer (STOP); rl resamples and gets it right
    eps = sample_all(ckpts, fixed_set("3x4")[5], CFG, seed=0)
    assert [d.verdict for d in eps["sft_reflection"].decisions] == ["STOP"]
    assert [d.verdict for d in eps["rl"].decisions] == ["RESAMPLE", "STOP"] and eps["rl"].correct
    return eps


# ------------------------------------------------------------------------------- problems
# ------------------------------------------------------------------------------- sampling
def test_sample_all_matches_direct_rollout_and_shares_the_stream(ckpts, episodes):
    p = fixed_set("3x4")[5]
    for label, ck in ckpts.items():
        direct = rollout(ck.model, ck.tokenizer, ck.format, [p], CFG, seed=0)[0]
        assert episodes[label].token_ids == direct.token_ids
    # the same model under two labels writes the same episode: the stream is shared
    twin = sample_all({"a": ckpts["rl"], "b": ckpts["rl"]}, p, CFG, seed=0)
    assert twin["a"].token_ids == twin["b"].token_ids == episodes["rl"].token_ids


def test_outcome_frame_reports_each_episode(ckpts, episodes):
    df = outcome_frame(episodes)
    assert outcome_frame(
        {
            "x": sample_episode(
                ckpts["rl"], Problem(999999999999, 999999999999), SamplingConfig(max_attempts=1, max_new_tokens=8), 0
            )
        }
    )["true answer"][0] == str(999999999999**2)  # > int64: as text
    assert list(df["checkpoint"]) == list(episodes)
    for row, ep in zip(df.itertuples(index=False), episodes.values()):
        assert row.correct == ep.correct
        assert row.attempts == ep.n_attempts
        assert row.verdicts.split(" → ") == [d.verdict for d in ep.decisions]
        assert row.answer == ("" if ep.final_answer is None else str(ep.final_answer))
        assert row[2] == str(ep.problem.answer)
    ef = episode_frame(episodes["rl"])
    assert list(ef["role"]) == list(episodes["rl"].roles)
    assert len(ef) == len(episodes["rl"].token_ids)


# ------------------------------------------------------------------------------- scoring
def test_score_matches_token_logprobs_unpadded(ckpts, episodes):
    """Batched, left-padded teacher forcing = one unpadded token_logprobs call per transcript."""
    ck = ckpts["sft_reflection"]
    eps = list(episodes.values()) + [sample_episode(ck, Problem(12, 34), CFG, 0)]
    assert len({len(e.token_ids) for e in eps}) == 3  # three lengths: left padding is exercised
    scored = score(ck, [e.token_ids for e in eps])
    dec = decision_token_ids(ck.tokenizer)
    for e, s in zip(eps, scored):
        ids = torch.tensor([e.token_ids])
        with torch.no_grad(), MODEL_LOCK:
            ref = token_logprobs(ck.model, ids)[0].double().numpy()
            probs = torch.softmax(ck.model(input_ids=ids).logits[0].double(), -1).numpy()
        assert math.isnan(s.logp[0])
        np.testing.assert_allclose(s.logp[1:], ref[1:], atol=2e-4)
        for t in e.positions("decision"):
            assert s.p_stop[t] == pytest.approx(probs[t - 1, dec["STOP"]], abs=2e-5)
            assert s.p_resample[t] == pytest.approx(probs[t - 1, dec["RESAMPLE"]], abs=2e-5)


def test_score_refuses_ids_outside_vocab_and_context(ckpts):
    with pytest.raises(CompareError, match="vocabulary"):
        score(ckpts["rl"], [[1, 5, 100000]])
    with pytest.raises(CompareError, match="context"):
        score(ckpts["rl"], [[1] * 5000])
    with pytest.raises(CompareError, match="empty"):
        score(ckpts["rl"], [[]])


# ------------------------------------------------------------------------------- teacher forcing
def test_teacher_force_deltas_roles_and_decisions(ckpts, episodes):
    ep = episodes["rl"]
    tf = teacher_force(ckpts, ep, "rl")
    t = tf.tokens
    src = t[t["checkpoint"] == "rl"]
    oth = t[t["checkpoint"] == "sft_reflection"]
    assert (src["delta"].dropna() == 0).all()
    np.testing.assert_allclose(oth["delta"].to_numpy()[1:], oth["logp"].to_numpy()[1:] - src["logp"].to_numpy()[1:])
    # the log-probs are the direct ones
    with torch.no_grad(), MODEL_LOCK:
        direct = token_logprobs(ckpts["sft_reflection"].model, torch.tensor([ep.token_ids]))[0].numpy()
    np.testing.assert_allclose(oth["logp"].to_numpy()[1:], direct[1:], atol=2e-4)
    # role summary = hand means over role positions
    for role in ("sampling", "decision"):
        pos = ep.positions(role)
        row = tf.roles[(tf.roles["checkpoint"] == "sft_reflection") & (tf.roles["role"] == role)].iloc[0]
        assert row["n"] == len(pos)
        assert row["mean_delta"] == pytest.approx(float(np.mean(oth["delta"].to_numpy()[pos])))
    gen = tf.roles[(tf.roles["checkpoint"] == "rl") & (tf.roles["role"] == GENERATED)].iloc[0]
    assert gen["n"] == len(ep.token_ids) - ep.prompt_len
    # one decision row per (decision, checkpoint); p(verdict) is that token's probability
    assert len(tf.decisions) == 2 * len(ep.decisions)
    for r in tf.decisions.itertuples(index=False):
        assert r.p_verdict == pytest.approx(math.exp(r.logp_verdict), rel=1e-6)
        assert r.p_verdict == (r.p_STOP if r.verdict == "STOP" else r.p_RESAMPLE)
        assert 0 <= r.p_STOP + r.p_RESAMPLE <= 1 + 1e-9
    pair = tf.pair("sft_reflection")
    assert list(pair.columns) == [
        "pos",
        "token",
        "role",
        "segment",
        "logp_transcript_model",
        "logp_compared_model",
        "delta",
    ]
    with pytest.raises(KeyError):
        tf.pair("nope")


def test_identical_models_have_zero_delta(ckpts, episodes):
    tf = teacher_force({"x": ckpts["rl"], "y": ckpts["rl"]}, episodes["sft_reflection"], "x")
    assert (tf.tokens["delta"].dropna() == 0).all()


def test_cross_likelihood_diagonal_matches_teacher_force(ckpts, episodes):
    scores = {lab: score(ck, [e.token_ids for e in episodes.values()]) for lab, ck in ckpts.items()}
    cross = cross_likelihood(episodes, scores)
    assert len(cross) == len(episodes) * len(ckpts) * 3
    for i, (src, ep) in enumerate(episodes.items()):
        tf = teacher_force_scores(ep, src, {lab: scores[lab][i] for lab in ckpts})
        for lab in ckpts:
            a = cross[(cross["transcript"] == src) & (cross["checkpoint"] == lab) & (cross["role"] == GENERATED)].iloc[
                0
            ]
            b = tf.roles[(tf.roles["checkpoint"] == lab) & (tf.roles["role"] == GENERATED)].iloc[0]
            assert a["mean_logp"] == pytest.approx(b["mean_logp"])
            assert a["n"] == b["n"]


def test_vocabulary_mismatch_is_a_clear_error(ckpts, episodes, tmp_path, bpe_tokenizer):
    d = tmp_path / "bpe"
    save_checkpoint(
        d, init_model(bpe_tokenizer, "llama", hidden=32, layers=1, heads=2), bpe_tokenizer, Card(condition="bpe")
    )
    other = load_checkpoint(d)
    msg = vocab_problem({"rl": ckpts["rl"], "bpe": other})
    assert "do not share a tokenizer vocabulary" in msg and "bpe" in msg
    with pytest.raises(CompareError, match="tokenizer vocabulary"):
        teacher_force({"rl": ckpts["rl"], "bpe": other}, episodes["rl"], "rl")
    with pytest.raises(CompareError, match="tokenizer vocabulary"):
        compare_attribution({"rl": ckpts["rl"], "bpe": other}, episodes["rl"], "rl", "sft_sum")
    assert vocab_problem(ckpts) is None
    assert "at least two" in vocab_problem({"rl": ckpts["rl"]})


# ------------------------------------------------------------------------------- attribution
def test_compare_attribution_matches_direct_attribute(ckpts, episodes):
    ep = episodes["rl"]
    ac = compare_attribution(ckpts, ep, "rl", "surrogate")
    assert ac.advantage == default_advantage(ep) == (1.0 if ep.correct else -1.0)
    for lab, ck in ckpts.items():
        direct = attribute(ck, ep, "surrogate", advantage=ac.advantage, norms=False)
        row = ac.figures[ac.figures["checkpoint"] == lab].iloc[0]
        assert row["norm_G_S"] == pytest.approx(direct.figures.norm_G_S, rel=1e-6)
        assert row["norm_G_D"] == pytest.approx(direct.figures.norm_G_D, rel=1e-6)
        assert row["ratio_SD"] == pytest.approx(direct.figures.ratio_SD, rel=1e-6)
        assert row["cos_SD"] == pytest.approx(direct.figures.cos_SD, rel=1e-5, abs=1e-9)
        share = ac.tokens[ac.tokens["checkpoint"] == lab]["share"].to_numpy()
        np.testing.assert_allclose(share, direct.share, rtol=1e-6, atol=1e-12)
        assert share.sum() == pytest.approx(1.0, abs=1e-6)
    t = ac.tokens
    diff = t[t["checkpoint"] == "sft_reflection"]["share"].to_numpy() - t[t["checkpoint"] == "rl"]["share"].to_numpy()
    np.testing.assert_allclose(t[t["checkpoint"] == "sft_reflection"]["share_diff"].to_numpy(), diff)
    assert (t[t["checkpoint"] == "rl"]["share_diff"] == 0).all()
    assert ac.errors == {}


def test_kl_against_itself_is_reported_per_model_and_cached(ckpts, episodes, tmp_path):
    ep = episodes["rl"]
    store = ResultsStore(tmp_path / "data")
    ref = ckpts["sft_reflection"]
    ac = compare_attribution(ckpts, ep, "rl", "kl_k3", ref=ref, ref_label="sft_reflection", store=store)
    assert set(ac.errors) == {"sft_reflection"} and "zero" in ac.errors["sft_reflection"]
    bad = ac.figures[ac.figures["checkpoint"] == "sft_reflection"].iloc[0]
    assert math.isnan(bad["norm_G_S"]) and bad["error"]
    direct = attribute(ckpts["rl"], ep, "kl_k3", ref_model=ref, norms=False)
    good = ac.figures[ac.figures["checkpoint"] == "rl"].iloc[0]
    assert good["ratio_SD"] == pytest.approx(direct.figures.ratio_SD, rel=1e-6)
    assert ac.ref == "sft_reflection"
    # a second call is served by the store (same numbers)
    again = compare_attribution(ckpts, ep, "rl", "kl_k3", ref=ref, store=store)
    assert again.figures.loc[again.figures["checkpoint"] == "rl", "norm_G_D"].iloc[0] == good["norm_G_D"]
    # sharing with a failed transcript model: no share difference
    ac2 = compare_attribution(ckpts, episodes["sft_reflection"], "sft_reflection", "kl_k3", ref=ref, store=store)
    assert ac2.tokens["share_diff"].isna().all()


def test_attribute_one_is_what_the_page_and_the_comparison_compute(ckpts, episodes, tmp_path):
    """The page's per-model cell (attribute_one) gives the comparison's numbers, or the reason."""
    ep = episodes["rl"]
    store = ResultsStore(tmp_path / "data")
    res, err = attribute_one(ckpts["rl"], ep, "surrogate", store, advantage=1.0)
    assert err is None and res.figures.ratio_SD == pytest.approx(
        attribute(ckpts["rl"], ep, "surrogate", advantage=1.0, norms=False).figures.ratio_SD, rel=1e-9
    )
    ac = compare_attribution(ckpts, ep, "rl", "surrogate", advantage=1.0, store=store)
    assert ac.figures.loc[ac.figures["checkpoint"] == "rl", "ratio_SD"].iloc[0] == res.figures.ratio_SD
    none, why = attribute_one(ckpts["sft_reflection"], ep, "kl_k3", store, ref=ckpts["sft_reflection"])
    assert none is None and "zero" in why


def test_parent_among_finds_the_cards_parent():
    choices = {p.name: str(p) for p in (SHIPPED_DIR / n for n in ("base", "sft", "sft_reflection", "rl"))}
    assert parent_among(load_checkpoint(SHIPPED_DIR / "rl"), choices) == "sft_reflection"
    assert parent_among(load_checkpoint(SHIPPED_DIR / "sft"), choices) == "base"
    assert parent_among(load_checkpoint(SHIPPED_DIR / "base"), choices) is None


def test_verdicts_text(episodes):
    assert verdicts_text(episodes["rl"]) == "RESAMPLE → STOP"
    assert verdicts_text(episodes["rl"], ",", "") == "RESAMPLE,STOP"
    assert verdicts_text(episodes["sft_reflection"], " ") == "STOP"


def test_compare_attribution_bad_requests(ckpts, episodes):
    with pytest.raises(CompareError, match="unknown objective"):
        compare_attribution(ckpts, episodes["rl"], "rl", "nope")
    with pytest.raises(CompareError, match="reference"):
        compare_attribution(ckpts, episodes["rl"], "rl", "kl_k1")
    with pytest.raises(CompareError, match="finite"):
        compare_attribution(ckpts, episodes["rl"], "rl", "surrogate", advantage=float("nan"))


# ------------------------------------------------------------------------------- charts
def test_chart_builders(ckpts, episodes):
    from ui.charts.compare import (
        attribution_figures_chart,
        cross_chart,
        decision_chart,
        delta_chart,
        role_delta_chart,
        share_diff_chart,
    )

    tf = teacher_force(ckpts, episodes["rl"], "rl")
    fig = delta_chart(tf.tokens, "rl")
    bars = [t for t in fig.data if t.type == "bar"]
    assert {t.name for t in bars} == {"prompt", "sampling", "decision"}
    n_gen = sum(len(t.x) for t in bars)
    assert n_gen == len(episodes["rl"].token_ids)  # one bar per position of the one other model
    assert {t.name for t in role_delta_chart(tf.roles, "rl").data} == {"sft_reflection"}
    dfig = decision_chart(tf.decisions)
    assert len(dfig.data) == 4 and list(dfig.data[0].y) == list(
        tf.decisions[tf.decisions["checkpoint"] == "sft_reflection"]["p_STOP"]
    )
    scores = {lab: score(ck, [e.token_ids for e in episodes.values()]) for lab, ck in ckpts.items()}
    assert cross_chart(cross_likelihood(episodes, scores)).data[0].z.shape == (2, 2)
    ac = compare_attribution(ckpts, episodes["rl"], "rl", "sft_sum")
    ffig = attribution_figures_chart(ac.figures, "sft_sum")
    assert list(ffig.data[0].y) == list(ac.figures["norm_G_S"])
    assert share_diff_chart(ac.tokens, "rl", "sft_sum").data
    # empty inputs give a figure with a message, not an exception
    assert delta_chart(tf.tokens[tf.tokens["checkpoint"] == "rl"], "rl").layout.annotations
    assert decision_chart(tf.decisions.iloc[:0]).layout.annotations
    assert attribution_figures_chart(ac.figures.iloc[:0], "x").layout.annotations
