"""ds_core.analysis.regret: the walk with optimal verdicts on hand-built episodes, the regret
decomposition adding up, the optimal continuations against an exact computation (greedy sampling:
each one is a single deterministic rollout, replayed here round by round with the oracle's
verdicts), the store serving a run back, the CLI."""

from __future__ import annotations

import random

import numpy as np
import pandas as pd
import pytest

from ds_core.analysis import regret as R
from ds_core.episodes.formats import DSFormat
from ds_core.episodes.tasks import Problem
from ds_core.episodes.tokenizer import RESAMPLE_TOKEN, STOP_TOKEN, decision_token_ids
from ds_core.episodes.traces import wrong_attempt
from ds_core.models.checkpoint import load_checkpoint
from ds_core.models.rollout import rollout
from ds_core.models.sampling import Prefix, SamplingConfig
from ds_core.paths import SHIPPED_DIR
from ds_core.store import ResultsStore


@pytest.fixture(scope="module")
def sr():
    return load_checkpoint(SHIPPED_DIR / "sft_reflection")


def built(tok, attempts: list[bool], verdicts: list[str], problem=Problem(123, 45)):
    """An episode of `problem` whose attempts are right (True) or wrong (False), each followed by the
    verdict at the same place ('' for none: the generation ends there)."""
    fmt = DSFormat()
    rng = random.Random(0)
    text = fmt.prompt_text(problem)
    for ok, v in zip(attempts, verdicts):
        text += fmt.attempt_text(problem) if ok else wrong_attempt(fmt, problem, rng)
        text += {"STOP": STOP_TOKEN, "RESAMPLE": RESAMPLE_TOKEN, "": ""}[v]
    ids = tok(text, add_special_tokens=False)["input_ids"]
    return fmt.parse(problem, ids, len(fmt.prompt_ids(tok, problem)), tok, max_attempts=4)


def test_the_walk_finds_where_the_verdicts_part(sr):
    t = sr.tokenizer
    cases = [
        (([True], ["STOP"]), (R.NONE, None)),
        (([False], ["STOP"]), (R.WRONG_KEPT, 0)),
        (([True, True], ["RESAMPLE", "STOP"]), (R.CORRECT_REVISED, 0)),
        (([False, False], ["RESAMPLE", "STOP"]), (R.WRONG_KEPT, 1)),
        (([False, True], ["RESAMPLE", "STOP"]), (R.NONE, None)),
        (([False], [""]), (R.NONE, None)),  # no verdict: nothing to replace
        (([False] * 4, ["RESAMPLE"] * 3 + ["STOP"]), (R.NONE, None)),  # wrong at the cap
        (([False, False, False, True], ["RESAMPLE"] * 3 + ["RESAMPLE"]), (R.NONE, None)),  # revised at the cap
    ]
    for (att, ver), want in cases:
        ep = built(t, att, ver)
        assert [a.correct for a in ep.attempts] == att and R.departure(ep, 4) == want, (att, ver)
    assert R.departure(built(t, [False, True], ["STOP", ""]), 1) == (R.NONE, None)  # cap 1: no retry at all


def test_regret_decomposition_adds_up(sr):
    t = sr.tokenizer
    eps = [
        built(t, [False], ["STOP"]),  # wrong kept, 3 of 4 optimal continuations right: regret 0.75
        built(t, [True, False], ["RESAMPLE", "STOP"]),  # correct revised, ended wrong: regret 1
        built(t, [True, True], ["RESAMPLE", "STOP"]),  # correct revised, right again: regret 0
        built(t, [False], ["STOP"]),  # wrong kept, none saved: cannot succeed
        built(t, [False, True], ["RESAMPLE", "STOP"]),  # the optimal verdicts: regret 0
    ]
    per = R.episode_regret(eps, [3, None, None, 0, None], SamplingConfig(), 4)
    assert list(per["own"]) == [0, 0, 1, 0, 1] and list(per["optimal"]) == [0.75, 1, 1, 0, 1]
    assert list(per["regret"]) == [0.75, 1, 0, 0, 0]
    np.testing.assert_allclose(per["regret"], per["wrong_kept"] + per["correct_revised"])
    assert list(per["wrong_kept"]) == [0.75, 0, 0, 0, 0] and list(per["cannot_succeed"]) == [0, 0, 0, 1, 0]
    assert per["optimal_lo"][0] < 0.75 < per["optimal_hi"][0] and list(per["n"]) == [4, 0, 0, 4, 0]
    s = R.regret_summary(per, "3x3")
    assert s["regret"] == pytest.approx(s["wrong_kept"] + s["correct_revised"]) == pytest.approx(0.35)
    assert s["optimal"] - s["own"] == pytest.approx(s["regret"]) and s["cannot_succeed"] == pytest.approx(0.2)
    assert (s["n_wrong_kept"], s["n_correct_revised"]) == (2, 2)
    assert s["regret_lo"] <= s["regret"] <= s["regret_hi"]


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_optimal_continuations_against_rounds_replayed_by_hand(sr, temperature):
    """Each optimal continuation is rounds of "one rollout to the next verdict, the oracle's verdict
    written", round r from the stream "<stream>:<r>" with a fresh budget: replayed here by hand, one
    plain rollout call per round, against the one call optimal_continuations makes."""
    from ds_core.episodes.tasks import test_set

    cfg = SamplingConfig(temperature=temperature)
    res = decision_token_ids(sr.tokenizer)["RESAMPLE"]
    probs = test_set("3x4")[:4] + test_set("3x5")[:4]
    # start each from a wrong attempt kept: the model's first attempt, then [RESAMPLE]
    firsts = rollout(sr.model, sr.tokenizer, sr.format, probs, cfg, seed=0)
    prefixes = [
        Prefix(e.problem, tuple(e.token_ids[: e.decisions[0].start]) + (res,), e.prompt_len)
        for e in firsts
        if e.decisions
    ]
    assert len(prefixes) >= 4
    streams = [str(i) for i in range(len(prefixes))]
    seen = []
    got = R.optimal_continuations(sr, prefixes, cfg, seed=0, streams=streams, progress=lambda d, t: seen.append((d, t)))
    # the bar moves row by row up to all rows
    assert [t for _, t in seen] == [len(prefixes)] * len(seen)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen) and seen[-1][0] == len(prefixes)
    rounds = 0
    for p, s, ok in zip(prefixes, streams, got):
        cur, want, rnd = p, None, 0
        while want is None:  # the model's own continuation, cut at its first new verdict
            ep = rollout(sr.model, sr.tokenizer, sr.format, [cur], cfg, seed=0, streams=[f"{s}:{rnd}"])[0]
            d = next((x for x in ep.decisions if x.start >= len(cur.ids)), None)
            if d is None:
                want = ep.correct
            elif ep.attempts[d.index].correct or d.index + 1 >= cfg.max_attempts:
                want = ep.attempts[d.index].correct
            else:
                cur, rnd = Prefix(ep.problem, tuple(ep.token_ids[: d.start]) + (res,), ep.prompt_len), rnd + 1
        rounds += rnd
        assert ok == want
    assert rounds > 0  # some rows went on after a written revision


def test_a_regret_run_is_stored_and_read_back(sr, tmp_path, monkeypatch):
    from ds_core.analysis import decisions as D

    store = ResultsStore(tmp_path / "data")
    values, per, table = R.regret_run(sr, ["3x3"], n_problems=4, n=2, seed=0, store=store)
    assert list(table["size"]) == ["3x3"] and table["episodes"].iloc[0] == 4 and len(per) == 4
    assert set(values["size"]) == {"3x3"} == set(per["size"])

    def boom(*a, **k):
        raise AssertionError("recomputed")

    monkeypatch.setattr(D, "decision_values", boom)
    monkeypatch.setattr(R, "optimal_counts", boom)
    again, per2, table2 = R.regret_run(sr, ["3x3"], n_problems=4, n=2, seed=0, store=store)
    pd.testing.assert_frame_equal(again, values)
    pd.testing.assert_frame_equal(per2, per)
    assert table2.equals(table)


def test_the_cli_prints_the_regret_table_and_writes_the_values(tmp_path, capsys):
    import json

    from ds_core.cli.main import main

    out, js = tmp_path / "values.csv", tmp_path / "values.json"
    argv = ["decisions", "--checkpoint", str(SHIPPED_DIR / "sft_reflection"), "--sizes", "3x3", "--n", "3"]
    rc = main(
        [*argv, "--continuations", "2", "--data-dir", str(tmp_path / "d"), "--csv", str(out)]
        + ["--json", str(js), "--quiet"]
    )
    text = capsys.readouterr().out
    assert rc == 0 and "optimal acc" in text and "wrong kept" in text and "  3x3    3" in text
    assert out.is_file() and pd.read_csv(out)["q_stop"].isin([0, 1]).all()
    doc = json.loads(js.read_text())  # what the Hypothesis and Calibration pages read when shipped
    assert doc["checkpoint"] == "sft_reflection" and doc["n"] == 3 and doc["continuations"] == 2
    assert doc["command"].startswith("python -m ds_core decisions --checkpoint")
    assert len(doc["rows"]) == len(pd.read_csv(out)) and len(doc["regret"]) == 3 and doc["summary"][0]["size"] == "3x3"
    assert main(["decisions", "--checkpoint", str(tmp_path), "--quiet"]) == 2  # not a checkpoint: a message
    assert "error:" in capsys.readouterr().err


def test_ship_document_merges_under_the_checkpoints_relative_path(tmp_path):
    import json

    f = tmp_path / "decisions.json"
    assert R.ship_document({"checkpoint": "rl", "n": 1}, SHIPPED_DIR / "rl", f) == "rl"
    assert R.ship_document({"checkpoint": "rl", "n": 2}, SHIPPED_DIR / "lab" / "rl" / "seed0", f) == "lab/rl/seed0"
    assert R.ship_document({"checkpoint": "mine", "n": 3}, tmp_path, f) == "mine"
    assert R.ship_document({"checkpoint": "rl", "n": 4}, SHIPPED_DIR / "rl", f) == "rl"  # replaced, not added
    docs = json.loads(f.read_text())["checkpoints"]
    assert {k: v["n"] for k, v in docs.items()} == {"rl": 4, "lab/rl/seed0": 2, "mine": 3}


def test_a_model_that_ends_right_after_the_revision_is_not_looped(sr, monkeypatch):
    """A model that never learned [RESAMPLE] may end its turn at once after it: the episode then ends
    on the prefix's own verdict, which must not be read as a new one (it looped forever once)."""
    import ds_core.models.rollout as ro

    calls = []

    def ends_at_once(model, tok, fmt, requests, cfg, **kw):
        calls.append(len(requests))
        return [fmt.parse(p.problem, list(p.ids), p.prompt_len, tok, max_attempts=cfg.max_attempts) for p in requests]

    monkeypatch.setattr(ro, "rollout", ends_at_once)
    ep = built(sr.tokenizer, [False], ["RESAMPLE"])
    p = Prefix(ep.problem, tuple(ep.token_ids), ep.prompt_len)
    assert R.optimal_continuations(sr, [p, p], SamplingConfig(), seed=0, streams=["a", "b"]) == [False, False]
    assert calls == [2]  # one round
