"""ds_core.analysis.decisions: Q-values against an exact computation (greedy continuations are
deterministic: every estimate is one rollout's outcome), the retry cap, Wilson coverage by
simulation, the refusals, the continuations behind an estimate (the regret: test_regret.py)."""

from __future__ import annotations

import numpy as np
import pytest

from ds_core.analysis import decisions as D
from ds_core.models.checkpoint import load_checkpoint
from ds_core.models.rollout import rollout
from ds_core.models.sampling import Prefix, SamplingConfig
from ds_core.models.teacher_forcing import score
from ds_core.paths import SHIPPED_DIR


@pytest.fixture(scope="module")
def sr():
    return load_checkpoint(SHIPPED_DIR / "sft_reflection")


@pytest.fixture(scope="module")
def episodes(sr):
    from ds_core.episodes.tasks import test_set

    probs = test_set("3x3")[:3] + test_set("3x5")[:2]
    return rollout(sr.model, sr.tokenizer, sr.format, probs, SamplingConfig(), seed=5)


def test_greedy_q_values_are_the_one_rollout_outcome(sr, episodes):
    greedy = SamplingConfig(temperature=0.0)
    vals = D.decision_values(sr, episodes, greedy, n=3, seed=1)
    assert len(vals) == sum(len(e.decisions) for e in episodes) and list(vals.columns) == list(D.COLUMNS)
    ids = D.verdict_ids(sr)
    s = score(sr, [e.token_ids for e in episodes])
    for r in vals.itertuples():
        ep = episodes[r.episode]
        d = ep.decisions[r.attempt - 1]
        assert r.q_stop == float(ep.attempts[d.index].correct) and r.chosen == d.verdict
        ps, pr = s[r.episode].p_stop[d.start], s[r.episode].p_resample[d.start]
        assert r.p_stop == pytest.approx(ps / (ps + pr))
        if r.at_cap:
            continue
        prefix = Prefix(ep.problem, tuple(ep.token_ids[: d.start]) + (ids["RESAMPLE"],), ep.prompt_len)
        one = rollout(sr.model, sr.tokenizer, sr.format, [prefix], greedy, seed=99)[0]
        assert r.k in (0, 3) and r.q_resample == float(one.correct)  # deterministic: all 3 agree with it
        best = max(r.q_stop, r.q_resample)
        assert r.optimal == ("either" if r.q_stop == r.q_resample else ("STOP" if r.q_stop == best else "RESAMPLE"))
        q_ch = r.q_stop if r.chosen == "STOP" else r.q_resample
        assert r.advantage_chosen == pytest.approx(q_ch - (r.q_resample + r.q_stop - q_ch))


def test_at_the_retry_cap_a_revision_keeps_the_answer(sr, episodes):
    vals = D.decision_values(sr, episodes, SamplingConfig(max_attempts=1), n=2, seed=0)
    assert vals["at_cap"].all() and (vals["q_resample"] == vals["q_stop"]).all() and (vals["n"] == 0).all()
    assert set(vals["optimal"]) == {"either"} and (vals["advantage_chosen"] == 0).all()


def test_wilson_covers_at_the_nominal_rate():
    rng = np.random.default_rng(0)
    for p in (0.05, 0.3, 0.5, 0.9):
        k = rng.binomial(32, p, 4000)
        cover = np.mean([lo <= p <= hi for lo, hi in (D.wilson(int(x), 32) for x in k)])
        assert cover >= 0.92, (p, cover)
    assert D.wilson(0, 10)[0] == 0.0 and D.wilson(10, 10)[1] == 1.0


def test_refusals(sr, episodes, tmp_path):
    from types import SimpleNamespace

    with pytest.raises(D.DecisionValueError, match="continuations"):
        D.decision_values(sr, episodes, SamplingConfig(), n=0)
    with pytest.raises(D.DecisionValueError, match="no \\[STOP\\]/\\[RESAMPLE\\]"):
        D.verdict_ids(SimpleNamespace(tokenizer=SimpleNamespace(get_vocab=dict)))  # what the regret needs


def test_the_continuations_behind_an_estimate_are_the_ones_counted(sr, episodes):
    cfg = SamplingConfig()
    vals = D.decision_values(sr, episodes[:3], cfg, n=4, seed=2)
    r = vals[~vals["at_cap"]].iloc[0]
    conts = D.continuations(sr, episodes[int(r.episode)], int(r.attempt), cfg, n=4, seed=2, stream=str(r.episode))
    assert len(conts) == 4 and sum(c.correct for c in conts) == r.k
    prefix_len = episodes[int(r.episode)].decisions[int(r.attempt) - 1].start
    assert all(c.token_ids[:prefix_len] == episodes[int(r.episode)].token_ids[:prefix_len] for c in conts)
    assert D.continuations(sr, episodes[0], 1, SamplingConfig(max_attempts=1), n=4) == []
    with pytest.raises(D.DecisionValueError, match="no verdict after attempt 9"):
        D.continuations(sr, episodes[0], 9, cfg, n=2)
