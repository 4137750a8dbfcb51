"""ds_core.analysis.metrics against hand-computed numbers, a simulation and real parsed episodes."""

import dataclasses
import json
import math
from types import SimpleNamespace as NS

import numpy as np
import pytest

import ds_core.analysis.metrics as M  # noqa: E402
from ds_core.episodes.formats import DSFormat  # noqa: E402
from ds_core.episodes.tasks import Problem  # noqa: E402
from ds_core.episodes.tokenizer import build_tokenizer  # noqa: E402

C, W = True, False
S, R = "STOP", "RESAMPLE"


def ep(*steps, correct=None, malformed=False):
    """A cheap episode-like object: steps are (correct, verdict or None) per attempt."""
    attempts = tuple(NS(index=i, correct=c) for i, (c, _) in enumerate(steps))
    decisions = tuple(NS(index=i, verdict=v) for i, (_, v) in enumerate(steps) if v is not None)
    if correct is None:
        correct = bool(steps) and steps[-1][0]
    return NS(attempts=attempts, decisions=decisions, correct=correct, malformed=malformed)


# Hand-built set. p_s = 2/5 (E1, E4 start correct).
# decided correct attempts: E1a0 S, E2a1 S, E4a0 R, E4a2 S -> p_dC = 3/4
# decided wrong attempts:   E2a0 R, E3a0 S, E4a1 R, E5a0 R -> p_dW = 3/4 (E5a1 has no decision)
# predicted = .4*.75 / (1 - [.4*.25 + .6*.75]) = .3/.45 = 2/3; observed = 3/5
HAND = [ep((C, S)), ep((W, R), (C, S)), ep((W, S)), ep((C, R), (W, R), (C, S)), ep((W, R), (W, None), malformed=True)]


# --- proportions -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "k, wald",
    [
        # hand-computed: p +- 1.96 sqrt(p(1-p)/100), clipped to [0, 1]
        (74, (0.654028, 0.825972)),  # Base 3x3
        (34, (0.247153, 0.432847)),  # Base 3x4: se .0473709
        (5, (0.007283, 0.092717)),  # Base 3x5: se .0217945
        (1, (0.0, 0.029502)),  # Base 3x6: lower end clipped
        (0, (0.0, 0.0)),  # SFT, reflection 3x9
        (49, (0.392020, 0.587980)),  # SFT, reflection 3x6: se .0499900
        (96, (0.921592, 0.998408)),  # SFT, reflection 3x3: se .0195959
        (98, (0.95256, 1.0)),  # RL 3x3: upper end clipped
        (72, (0.631997, 0.808003)),  # RL 3x7: se .0448999
    ],
)
def test_wald_table1(k, wald):
    a = M.accuracy(k, 100)
    assert (a.k, a.n, a.p) == (k, 100, k / 100)
    assert a.wald == pytest.approx(wald, abs=2e-6)


def test_wald_74_of_100_three_decimals():
    lo, hi = M.accuracy(74, 100).wald
    assert (round(lo, 3), round(hi, 3)) == (0.654, 0.826)


@pytest.mark.parametrize("k, n", [(74, 100), (34, 100), (5, 100), (1, 100), (0, 100), (98, 100), (3, 7)])
def test_wilson_matches_hand_formula(k, n):
    z = 1.959963984540054  # norm.ppf(0.975), as statsmodels uses
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    assert M.accuracy(k, n).wilson == pytest.approx((max(0, centre - half), min(1, centre + half)), abs=1e-9)


def test_wilson_74_of_100():
    # by hand: centre .759208/1.038416 = .731120, half 1.887492*.044945 = .084835
    assert M.accuracy(74, 100).wilson == pytest.approx((0.64629, 0.81595), abs=1e-5)


def test_accuracy_edge_cases():
    a = M.accuracy(0, 0)
    assert math.isnan(a.p) and all(math.isnan(x) for x in a.wald + a.wilson)
    assert a.to_dict() == {"k": 0, "n": 0, "p": None, "wald": [None, None], "wilson": [None, None]}
    full = M.accuracy(10, 10)
    assert full.wald == (1.0, 1.0) and full.wilson[1] == 1.0 and full.wilson[0] < 1
    assert M.accuracy(np.int64(3), np.int64(4)).p == 0.75
    for bad in [(5, 3), (-1, 3)]:
        with pytest.raises(ValueError):
            M.accuracy(*bad)
    with pytest.raises(TypeError):
        M.accuracy(True, 3)
    with pytest.raises(ValueError):  # validates itself
        M.Proportion(2, 4, 0.6, (0, 1), (0, 1))
    with pytest.raises(dataclasses.FrozenInstanceError):
        full.k = 3


# --- predicted accuracy ------------------------------------------------------------------------
def test_predicted_accuracy_hand_values():
    assert M.predicted_accuracy(0.5, 1.0, 0.5) == pytest.approx(0.5 / 0.75)
    assert M.predicted_accuracy(0.4, 0.75, 0.75) == pytest.approx(2 / 3)
    # p_dW = 0 (never retry a wrong answer): p_s p_dC / (1 - p_s (1 - p_dC))
    assert M.predicted_accuracy(0.5, 0.6, 0.0) == pytest.approx(0.3 / 0.8)
    # p_dC = 1 and p_dW = 1: retry until correct
    assert M.predicted_accuracy(0.3, 1.0, 1.0) == pytest.approx(1.0)
    # p_dC = 1, p_dW = 0 (always stop): first-attempt accuracy
    assert M.predicted_accuracy(0.3, 1.0, 0.0) == pytest.approx(0.3)
    assert M.predicted_accuracy(0.0, 0.7, 0.5) == 0.0


def test_predicted_accuracy_undefined_is_nan():
    assert math.isnan(M.predicted_accuracy(0.0, 1.0, 1.0))  # never correct, retries forever
    assert math.isnan(M.predicted_accuracy(1.0, 0.0, 0.5))  # always correct, always resamples
    assert math.isnan(M.predicted_accuracy(float("nan"), 1.0, 0.5))
    assert math.isnan(M.predicted_accuracy(0.5, 1.0, float("nan")))
    # a term with weight 0 does not need its probability
    assert M.predicted_accuracy(1.0, 0.9, float("nan")) == 1.0
    assert M.predicted_accuracy(0.0, float("nan"), 0.5) == 0.0
    out = M.predicted_accuracy(np.array([0.5, 0.0]), np.array([1.0, 1.0]), np.array([0.5, 1.0]))
    assert out[0] == pytest.approx(2 / 3) and math.isnan(out[1])
    with pytest.raises(ValueError):
        M.predicted_accuracy(1.2, 0.5, 0.5)


def _simulate(p_s, p_dC, p_dW, n, seed):
    rng = np.random.default_rng(seed)
    eps = []
    for _ in range(n):
        steps = []
        while True:  # unbounded independent retries
            c = bool(rng.random() < p_s)
            stop = rng.random() < (p_dC if c else 1 - p_dW)
            steps.append((c, S if stop else R))
            if stop:
                break
        eps.append(ep(*steps))
    return eps


@pytest.mark.parametrize("p_s, p_dC, p_dW", [(0.4, 0.9, 0.6), (0.3, 0.95, 0.2), (0.8, 1.0, 0.5)])
def test_predicted_matches_simulation(p_s, p_dC, p_dW):
    eps = _simulate(p_s, p_dC, p_dW, 4000, seed=1)
    r = M.calibration(eps, n_boot=50, seed=0)
    truth = M.predicted_accuracy(p_s, p_dC, p_dW)
    assert r.observed.value == pytest.approx(truth, abs=0.03)
    assert r.predicted.value == pytest.approx(r.observed.value, abs=0.03)
    assert (r.p_s.value, r.p_dC.value, r.p_dW.value) == pytest.approx((p_s, p_dC, p_dW), abs=0.03)
    assert r.predicted.ci[0] <= truth <= r.predicted.ci[1]


# --- calibration on hand-built episodes --------------------------------------------------------
def test_counts_hand_built():
    c = M.calibration_counts(HAND)
    assert (
        c.n,
        c.first_correct,
        c.correct_stop,
        c.correct_decided,
        c.wrong_resample,
        c.wrong_decided,
        c.final_correct,
    ) == (5, 2, 3, 4, 3, 4, 3)
    assert (c.p_s, c.p_dC, c.p_dW, c.observed) == (0.4, 0.75, 0.75, 0.6)
    assert c.predicted == pytest.approx(2 / 3)


def test_first_attempts_only():
    # first attempts: correct E1 S, E4 R -> 1/2; wrong E2 R, E3 S, E5 R -> 2/3
    c = M.calibration_counts(HAND, attempts="first")
    assert (c.correct_stop, c.correct_decided, c.wrong_resample, c.wrong_decided) == (1, 2, 2, 3)
    assert c.p_s == 0.4 and c.predicted == pytest.approx(0.2 / (0.2 + 0.6 / 3))
    with pytest.raises(ValueError):
        M.calibration(HAND, attempts="last")


def test_report_hand_built():
    r = M.calibration(HAND, n_boot=100, seed=0)
    assert r.n == 5 and r.accuracy.k == 3 and r.accuracy.p == 0.6
    assert (r.p_s.k, r.p_s.n, r.p_dC.k, r.p_dC.n, r.p_dW.k, r.p_dW.n) == (2, 5, 3, 4, 3, 4)
    assert r.predicted.value == pytest.approx(2 / 3) and r.predicted.k is None
    assert r.mean_attempts == pytest.approx(9 / 5) and r.malformed_fraction == pytest.approx(0.2)
    d = json.loads(json.dumps(r.to_dict(), allow_nan=False))
    assert d["p_dC"] == {"value": 0.75, "ci": list(r.p_dC.ci), "k": 3, "n": 4}
    assert d["counts"]["wrong_decided"] == 4 and d["attempts"] == "all"
    assert d["transitions"]["pairs"]["0->1"] == {"C->C": 0, "C->W": 1, "W->C": 1, "W->W": 1}


def test_episode_without_attempts_counts_as_wrong_first():
    c = M.calibration_counts([ep((C, S)), NS(attempts=(), decisions=(), correct=False)])
    assert (c.n, c.first_correct, c.correct_decided, c.wrong_decided) == (2, 1, 1, 0)


def test_transitions_hand_built():
    t = M.transition_counts(HAND)
    D, P = M.DecisionCounts, M.PairCounts
    assert t.at(0) == D(correct_kept=1, wrong_revised=2, wrong_kept=1, correct_changed=1)
    assert t.at(1) == D(correct_kept=1, wrong_revised=1)  # E5's second attempt: no verdict
    assert t.at(2) == D(correct_kept=1) and t.at(3) == D()
    assert t.total == D(3, 3, 1, 1)
    assert t.pair(0) == P(C_to_C=0, C_to_W=1, W_to_C=1, W_to_W=1)
    assert t.pair(1) == P(W_to_C=1) and t.pair_total == P(0, 1, 2, 1)
    assert [k for k, _ in t.by_index] == [0, 1, 2] and [k for k, _ in t.pairs] == [0, 1]
    with pytest.raises(ValueError):
        M.Transitions(t.by_index, t.pairs, D(), t.pair_total)
    with pytest.raises(ValueError):
        D(correct_kept=-1)


# --- bootstrap ---------------------------------------------------------------------------------
def test_bootstrap_deterministic_and_contains_point():
    eps = _simulate(0.5, 0.9, 0.5, 300, seed=7)
    a = M.calibration(eps, n_boot=100, seed=3)
    b = M.calibration(eps, n_boot=100, seed=3)
    assert a.to_dict() == b.to_dict()
    assert M.calibration(eps, n_boot=100, seed=4).p_s.ci != a.p_s.ci
    for q in M.QUANTITIES:
        e = getattr(a, q)
        assert e.ci[0] <= e.value <= e.ci[1] and e.ci[0] < e.ci[1], q


def test_bootstrap_matches_manual_resampling():
    eps = HAND * 3
    n_boot, seed = 30, 11
    got = M.bootstrap_intervals(eps, n_boot=n_boot, seed=seed)
    idx = np.random.default_rng(seed).integers(0, len(eps), size=(n_boot, len(eps)))
    vals = {q: [] for q in M.QUANTITIES}
    for row in idx:
        c = M.calibration_counts([eps[i] for i in row])
        for q in M.QUANTITIES:
            vals[q].append(getattr(c, q))
    for q in M.QUANTITIES:
        assert got[q] == pytest.approx(tuple(np.nanpercentile(vals[q], [2.5, 97.5]))), q


def test_bootstrap_skips_undefined_resamples():
    # only one episode has a wrong decided attempt: many resamples leave p_dW undefined
    eps = [ep((C, S))] * 19 + [ep((W, R), (C, S))]
    r = M.calibration(eps, n_boot=100, seed=0)
    assert r.p_dW.value == 1.0 and r.p_dW.ci == (1.0, 1.0)
    assert all(math.isnan(x) for ci in M.bootstrap_intervals(eps, n_boot=0).values() for x in ci)


# --- edge cases --------------------------------------------------------------------------------
def test_no_episodes():
    r = M.calibration([])
    assert r.n == 0 and math.isnan(r.p_s.value) and math.isnan(r.predicted.value)
    assert math.isnan(r.mean_attempts) and r.transitions.total == M.DecisionCounts()
    d = json.loads(json.dumps(r.to_dict(), allow_nan=False))
    assert d["p_s"] == {"value": None, "ci": [None, None], "k": 0, "n": 0}
    assert d["accuracy"]["p"] is None and d["mean_attempts"] is None


def test_all_correct_no_wrong_attempts():
    r = M.calibration([ep((C, S))] * 10)
    assert math.isnan(r.p_dW.value) and (r.p_dW.k, r.p_dW.n) == (0, 0)
    assert all(math.isnan(x) for x in r.p_dW.ci)
    assert (r.p_s.value, r.p_dC.value, r.observed.value, r.predicted.value) == (1, 1, 1, 1)
    assert r.accuracy.wald == (1.0, 1.0)
    assert json.loads(json.dumps(r.to_dict(), allow_nan=False))["p_dW"]["value"] is None


def test_all_wrong_and_stubborn():
    r = M.calibration([ep((W, S))] * 5)
    assert (r.p_s.value, r.p_dW.value, r.predicted.value) == (0, 0, 0)
    assert math.isnan(r.p_dC.value)


def test_estimate_validates():
    with pytest.raises(ValueError):
        M.Estimate(1.5, (0, 1))
    with pytest.raises(ValueError):
        M.Estimate(0.5, (0.6, 0.4))
    with pytest.raises(ValueError):
        M.Estimate(0.5, (0.4, 0.6), k=3, n=2)


# --- real episodes -----------------------------------------------------------------------------
def test_real_episodes():
    f, tok = DSFormat(), build_tokenizer()

    def parse(problem, answers, final_stop=True):
        text = f.trace_text(problem, [f.attempt_text(problem, answer=a) for a in answers], final_stop=final_stop)
        ids = tok(text, add_special_tokens=False)["input_ids"]
        prompt_len = len(tok(f.prompt_text(problem), add_special_tokens=False)["input_ids"])
        return f.parse(problem, ids, prompt_len, tok)

    p, q = Problem(123, 4567), Problem(987, 654)
    eps = [
        parse(p, [p.answer + 1, None]),  # wrong -> RESAMPLE, correct -> STOP
        parse(q, [None]),  # correct -> STOP
        parse(q, [q.answer + 9]),  # wrong -> STOP
        parse(p, [p.answer + 2], final_stop=False),
    ]  # wrong -> RESAMPLE, then nothing
    assert [e.correct for e in eps] == [True, True, False, False]
    assert [e.malformed for e in eps] == [False, False, False, True]
    r = M.calibration(eps, n_boot=20)
    # p_s = 1/4; p_dC = 2/2; p_dW = 2/3; predicted = .25/(.25 + .75/3) = .5
    assert (r.p_s.value, r.p_dC.value) == (0.25, 1.0) and r.p_dW.value == pytest.approx(2 / 3)
    assert r.predicted.value == pytest.approx(0.5) and r.observed.value == 0.5
    assert r.mean_attempts == 1.25 and r.malformed_fraction == 0.25
    t = r.transitions
    assert t.at(0) == M.DecisionCounts(correct_kept=1, wrong_revised=2, wrong_kept=1)
    assert t.at(1) == M.DecisionCounts(correct_kept=1) and t.pair(0) == M.PairCounts(W_to_C=1)
    json.dumps(r.to_dict(), allow_nan=False)
