"""ds_core.analysis.verdicts: the test-set verdict comparison against a hand computation with the
teacher-forcing scorer, its summary and intervals against hand-computed numbers, the store
serving it the second time, and the refusals."""

from __future__ import annotations

import numpy as np
import pytest

from ds_core.analysis import verdicts as V
from ds_core.models.checkpoint import load_checkpoint
from ds_core.models.sampling import SamplingConfig
from ds_core.models.teacher_forcing import score
from ds_core.paths import SHIPPED_DIR
from ds_core.store import ResultsStore


@pytest.fixture(scope="module")
def models():
    return {name: load_checkpoint(SHIPPED_DIR / name) for name in ("sft_reflection", "rl")}


@pytest.fixture(scope="module")
def compared(models, tmp_path_factory):
    store = ResultsStore(tmp_path_factory.mktemp("data"))
    rows = V.compare_verdicts("sft_reflection", models, ["3x3", "3x5"], n=6, seed=0, cfg=SamplingConfig(), store=store)
    return store, rows


def test_rows_are_the_teacher_forced_verdict_probabilities(models, compared):
    store, rows = compared
    assert list(rows.columns) == list(V.ROW_COLUMNS) and set(rows["model"]) == {"sft_reflection", "rl"}
    # by hand: the stored 3x5 run's episodes, scored by rl, at each decision token
    run = next(r for r in store.list_runs(models["sft_reflection"].hash) if r.key.task_spec.startswith("3x5"))
    eps = store.load_episodes(run.digest)
    s = score(models["rl"], [e.token_ids for e in eps])
    want = []
    for i, e in enumerate(eps):
        for d in e.decisions:
            ps, pr = s[i].p_stop[d.start], s[i].p_resample[d.start]
            want.append((i, d.index + 1, e.attempts[d.index].correct, d.verdict, ps / (ps + pr)))
    got = rows[(rows["model"] == "rl") & (rows["size"] == "3x5")]
    assert [(r.episode, r.attempt, r.attempt_correct, r.written) for r in got.itertuples()] == [w[:4] for w in want]
    np.testing.assert_allclose(got["q_stop"], [w[4] for w in want], rtol=1e-6)
    assert (got["verdict"] == np.where(got["q_stop"] >= 0.5, "STOP", "RESAMPLE")).all()
    assert (~rows["attempt_correct"]).any() and rows["attempt_correct"].any()  # both kinds of attempt


def test_summary_and_disagreement_are_the_hand_computed_numbers(compared):
    _, rows = compared
    summ = V.verdict_summary(rows).set_index("model")
    for model, g in rows.groupby("model"):
        wrong, right = g[~g["attempt_correct"]], g[g["attempt_correct"]]
        s = summ.loc[model]
        assert s["p(STOP | wrong attempt)"] == pytest.approx(wrong["q_stop"].mean())
        assert s["p(RESAMPLE | correct attempt)"] == pytest.approx((1 - right["q_stop"]).mean())
        assert s["n wrong"] == len(wrong) and s["n correct"] == len(right)
        assert s["p(STOP | wrong attempt) lo"] <= s["p(STOP | wrong attempt)"] <= s["p(STOP | wrong attempt) hi"]
    dis = V.disagreement(rows)
    for r in dis.itertuples():
        g = rows[(rows["model"] == r.model) & (rows["attempt_correct"] == (r.attempt == "correct"))]
        k = int((g["verdict"] != g["written"]).sum())
        assert r._4 == k and r.rate == pytest.approx(k / len(g)) and r.lo <= r.rate <= r.hi
    assert V._wilson(0, 10)[0] == 0.0 and V._wilson(10, 10)[1] == pytest.approx(1.0)  # noqa: SLF001


def test_the_store_serves_it_the_second_time(models, compared, monkeypatch):
    store, rows = compared

    def boom(*a, **k):
        raise AssertionError("recomputed")

    monkeypatch.setattr("ds_core.models.teacher_forcing.score", boom)
    again = V.compare_verdicts("sft_reflection", models, ["3x3", "3x5"], n=6, seed=0, cfg=SamplingConfig(), store=store)
    assert again.equals(rows)


def test_refusals(models, chat_tokenizer, tmp_path):
    from types import SimpleNamespace

    store = ResultsStore(tmp_path / "d")
    with pytest.raises(V.VerdictError, match="results store"):
        V.compare_verdicts("rl", models, ["3x3"], n=2, seed=0, cfg=SamplingConfig(), store=None)
    with pytest.raises(V.VerdictError, match="not among"):
        V.compare_verdicts("base", models, ["3x3"], n=2, seed=0, cfg=SamplingConfig(), store=store)
    text = {**models, "chat": SimpleNamespace(tokenizer=chat_tokenizer, hash="x")}
    with pytest.raises(V.VerdictError, match="no \\[STOP\\]/\\[RESAMPLE\\] tokens"):
        V.compare_verdicts("rl", text, ["3x3"], n=2, seed=0, cfg=SamplingConfig(), store=store)
