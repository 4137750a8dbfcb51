"""ds_core.analysis.decisions: Q-values against an exact computation (greedy continuations are
deterministic: every estimate is one rollout's outcome), the retry cap, Wilson coverage by
simulation, the regret decomposition adding up, the store serving a run back, the refusals."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ds_core.analysis import decisions as D
from ds_core.models.checkpoint import load_checkpoint
from ds_core.models.rollout import rollout
from ds_core.models.sampling import Prefix, SamplingConfig
from ds_core.models.teacher_forcing import score
from ds_core.paths import SHIPPED_DIR
from ds_core.store import ResultsStore


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
    ids = D._verdict_ids(sr)  # noqa: SLF001
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


def test_regret_decomposition_adds_up():
    vals = pd.DataFrame(
        [  # episode, attempt, correct, chosen, q_stop, q_resample
            (0, 1, False, "STOP", 0.0, 0.75),  # wrong kept: regret 0.75
            (0, 2, True, "STOP", 1.0, 0.5),  # a later decision: not the first, not counted
            (1, 1, True, "RESAMPLE", 1.0, 0.25),  # correct revised: regret 0.75
            (2, 1, False, "RESAMPLE", 0.0, 0.0),  # wrong, no continuation correct: cannot succeed
            (3, 1, True, "STOP", 1.0, 0.5),  # right call: regret 0
        ],
        columns=["episode", "attempt", "attempt_correct", "chosen", "q_stop", "q_resample"],
    )
    per = D.episode_regret(vals)
    assert list(per["regret"]) == [0.75, 0.75, 0.0, 0.0]
    np.testing.assert_allclose(per["regret"], per["wrong_kept"] + per["correct_revised"])
    assert list(per["own"]) == [0.0, 0.25, 0.0, 1.0] and list(per["optimal"]) == [0.75, 1.0, 0.0, 1.0]
    assert list(per["cannot_succeed"]) == [False, False, True, False]
    s = D.regret_summary(per, "3x3")
    assert s["regret"] == pytest.approx(s["wrong_kept"] + s["correct_revised"]) == pytest.approx(0.375)
    assert s["optimal"] - s["own"] == pytest.approx(s["regret"]) and s["cannot_succeed"] == 0.25
    assert s["regret_lo"] <= s["regret"] <= s["regret_hi"]


def test_a_regret_run_is_stored_and_read_back(sr, tmp_path, monkeypatch):
    store = ResultsStore(tmp_path / "data")
    values, table = D.regret_run(sr, ["3x3"], n_problems=4, n=2, seed=0, store=store)
    assert list(table["size"]) == ["3x3"] and table["episodes"].iloc[0] == 4
    assert set(values["size"]) == {"3x3"}

    def boom(*a, **k):
        raise AssertionError("recomputed")

    monkeypatch.setattr(D, "decision_values", boom)
    again, table2 = D.regret_run(sr, ["3x3"], n_problems=4, n=2, seed=0, store=store)
    pd.testing.assert_frame_equal(again, values)
    assert table2.equals(table)


def test_refusals(sr, episodes, tmp_path):
    from types import SimpleNamespace

    with pytest.raises(D.DecisionValueError, match="continuations"):
        D.decision_values(sr, episodes, SamplingConfig(), n=0)
    with pytest.raises(D.DecisionValueError, match="no \\[STOP\\]/\\[RESAMPLE\\]"):
        D.decision_values(SimpleNamespace(tokenizer=SimpleNamespace(get_vocab=dict)), episodes, SamplingConfig())


def test_the_cli_prints_the_regret_table_and_writes_the_values(tmp_path, capsys):
    from ds_core.cli.main import main

    out = tmp_path / "values.csv"
    argv = ["decisions", "--checkpoint", str(SHIPPED_DIR / "sft_reflection"), "--sizes", "3x3", "--n", "3"]
    js = tmp_path / "values.json"
    rc = main(
        [
            *argv,
            "--continuations",
            "2",
            "--data-dir",
            str(tmp_path / "d"),
            "--csv",
            str(out),
            "--json",
            str(js),
            "--quiet",
        ]
    )
    text = capsys.readouterr().out
    assert rc == 0 and "optimal acc" in text and "wrong kept" in text and "  3x3    3" in text
    assert out.is_file() and pd.read_csv(out)["q_stop"].isin([0, 1]).all()
    import json

    doc = json.loads(js.read_text())  # what the Hypothesis page reads when shipped
    assert doc["checkpoint"] == "sft_reflection" and doc["n"] == 3 and doc["continuations"] == 2
    assert doc["command"].startswith("python -m ds_core decisions --checkpoint") and len(doc["rows"]) == len(
        pd.read_csv(out)
    )
    assert main(["decisions", "--checkpoint", str(tmp_path), "--quiet"]) == 2  # not a checkpoint: a message
    assert "error:" in capsys.readouterr().err


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
