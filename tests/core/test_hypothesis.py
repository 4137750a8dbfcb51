"""ds_core.analysis.hypothesis: every verdict follows its numbers (each rule tested on both sides with
synthetic data), and the shipped rows compute from the shipped files."""

from __future__ import annotations

import pandas as pd
import pytest

from ds_core.analysis import hypothesis as H


def _evals(acc: dict, p_s: dict | None = None, p_dw: dict | None = None) -> dict:
    """eval.json-shaped dicts: per condition, the same k of 100 at every OOD size."""
    out = {}
    for c, k in acc.items():
        sizes = {}
        for s in H.OOD:
            sizes[s] = {
                "accuracy": {"k": k, "n": 100},
                "p_s": {"k": (p_s or acc)[c], "n": 100},
                "p_dW": {"k": (p_dw or {}).get(c, 50), "n": 100},
            }
        out[c] = {"sizes": sizes}
    return out


def test_table_1_order_follows_the_numbers():
    assert H.table_1_order(_evals({"rl": 90, "sft_reflection": 50, "sft": 5})).verdict == H.SUPPORTED
    assert H.table_1_order(_evals({"rl": 5, "sft_reflection": 50, "sft": 1})).verdict == H.CONTRADICTED
    assert H.table_1_order(_evals({"rl": 1, "sft_reflection": 1, "sft": 0})).verdict == H.CANNOT_TELL
    assert H.table_1_order(_evals({"rl": 1})).verdict == H.CANNOT_TELL  # a condition missing


def test_ood_gain_needs_a_gain_then_asks_which_policy():
    same_ps = {"rl": 30, "sft_reflection": 30}
    gain = {"rl": 60, "sft_reflection": 30}
    assert H.ood_gain_from_decisions(_evals(gain, same_ps, {"rl": 90, "sft_reflection": 20})).verdict == H.SUPPORTED
    assert (
        H.ood_gain_from_decisions(
            _evals(gain, {"rl": 60, "sft_reflection": 30}, {"rl": 50, "sft_reflection": 50})
        ).verdict
        == H.CONTRADICTED
    )
    assert H.ood_gain_from_decisions(_evals({"rl": 2, "sft_reflection": 1})).verdict == H.CANNOT_TELL


def test_length_claims_follow_the_slopes():
    def slopes(vals):
        return pd.DataFrame(
            [{"checkpoint": c, "objective": "kl_k1", "metric": "ratio_SD", "slope": v} for c, v in vals.items()]
        )

    assert H.theorem_3_2(slopes({"a": 1.0, "b": 0.9})).verdict == H.SUPPORTED
    assert H.theorem_3_2(slopes({"a": -1.0, "b": -0.2})).verdict == H.CONTRADICTED
    assert H.theorem_3_2(slopes({"a": 1.0, "b": -0.2})).verdict == H.CANNOT_TELL
    assert H.sft_length_weighting(slopes({"a": 1.0})).verdict == H.CANNOT_TELL  # no sft_sum rows


def test_theorem_3_1_and_the_toy_follow_their_numbers():
    def ds(surr, sft):
        rows = []
        for i, (a, b) in enumerate(zip(surr, sft)):
            rows += [
                {"checkpoint": "x", "size": "3x3", "episode": i, "objective": "surrogate", "ratio_SD": a},
                {"checkpoint": "x", "size": "3x3", "episode": i, "objective": "sft_sum", "ratio_SD": b},
            ]
        return pd.DataFrame(rows)

    assert H.theorem_3_1(ds([10.0, 20.0], [10.0, 20.0])).verdict == H.SUPPORTED
    assert H.theorem_3_1(ds([10.0, 30.0], [10.0, 20.0])).verdict == H.CONTRADICTED
    assert H.toy_figure_1({"surrogate_ratio_median": 1.1, "kl_ratio_median": 8}).verdict == H.SUPPORTED
    assert H.toy_figure_1({"surrogate_ratio_median": 5.0, "kl_ratio_median": 8}).verdict == H.CONTRADICTED
    assert H.toy_figure_1({}).verdict == H.CANNOT_TELL
    with pytest.raises(ValueError):
        H.Claim("k", "c", "m", "n", "maybe", "r", "p")


def test_shipped_claims_compute_from_the_shipped_files():
    rows = H.shipped_claims()
    keys = ["theorem_3_1", "theorem_3_2", "sft_length", "toy", "table_1", "ood_gain", "follows_q"]
    assert [c.key for c in rows] == keys
    by = {c.key: c for c in rows}
    assert by["theorem_3_1"].verdict == H.SUPPORTED  # the identity holds exactly on every shipped episode
    assert by["toy"].verdict == H.SUPPORTED
    frame = H.claims_frame(rows)
    assert list(frame.columns) == ["claim", "verdict", "numbers", "rule", "evidence"] and len(frame) == 7
    assert "stale" not in by["follows_q"].numbers and "left out" not in by["follows_q"].numbers


def test_decisions_follow_q_tests_keeping_and_revising_apart_and_skips_stale_ones():
    def doc(h, keep, revise, either=5):
        """keep / revise: (chose the higher Q, did not) where STOP / RESAMPLE is worth more."""
        rows = [{"optimal": "STOP", "chosen": "STOP", "at_cap": False}] * keep[0]
        rows += [{"optimal": "STOP", "chosen": "RESAMPLE", "at_cap": False}] * keep[1]
        rows += [{"optimal": "RESAMPLE", "chosen": "RESAMPLE", "at_cap": False}] * revise[0]
        rows += [{"optimal": "RESAMPLE", "chosen": "STOP", "at_cap": False}] * revise[1]
        rows += [{"optimal": "either", "chosen": "STOP", "at_cap": False}] * either  # does not count
        rows += [{"optimal": "RESAMPLE", "chosen": "STOP", "at_cap": True}] * either  # at the cap: no choice
        return {"checkpoint_hash": h, "rows": rows}

    def verdict(*docs):
        return H.decisions_follow_q({f"c{i}": d for i, d in enumerate(docs)}, {f"c{i}": "h" for i in range(len(docs))})

    assert verdict(doc("h", (40, 0), (30, 0))).verdict == H.SUPPORTED
    # a model that never revises keeps every correct attempt: the revising half is untested
    never = verdict(doc("h", (178, 0), (0, 0)))
    assert never.verdict == H.CANNOT_TELL and "revise: none" in never.numbers
    # ... but pooled with a model that does revise, both halves are measured
    assert verdict(doc("h", (178, 0), (0, 0)), doc("h", (0, 0), (25, 0))).verdict == H.SUPPORTED
    assert verdict(doc("h", (40, 0), (5, 40))).verdict == H.CONTRADICTED  # keeps where it should revise
    assert verdict(doc("h", (5, 40), (40, 0))).verdict == H.CONTRADICTED
    assert verdict(doc("h", (40, 0), (25, 15))).verdict == H.CANNOT_TELL
    assert verdict(doc("h", (40, 0), (10, 0))).verdict == H.CANNOT_TELL  # too few revise points
    by = verdict(doc("h", (30, 2), (20, 1)))
    assert "c0 keep 30/32" in by.numbers and "revise 20/21" in by.numbers and "pooled keep 30/32" in by.numbers
    stale = H.decisions_follow_q({"rl": doc("old", (40, 0), (40, 0))}, {"rl": "new"})
    assert stale.verdict == H.CANNOT_TELL and "another version: rl" in stale.numbers


def _regret_doc(mean: float, n: int = 200, hash_="h") -> dict:
    """A decisions document whose OOD episodes have regret 1 for a share `mean` of them."""
    k = round(mean * n)
    rows = [{"size": H.OOD[i % len(H.OOD)], "regret": 1.0 if i < k else 0.0} for i in range(n)]
    return {"checkpoint_hash": hash_, "regret": rows + [{"size": "3x3", "regret": 1.0}] * 50}


def test_ood_gain_weighs_the_decision_regret():
    gain, ps_same, pdw_same = (
        {"rl": 60, "sft_reflection": 30},
        {"rl": 30, "sft_reflection": 30},
        {"rl": 50, "sft_reflection": 50},
    )
    hashes = {"rl": "h", "sft_reflection": "h"}
    ev = _evals(gain, ps_same, pdw_same)  # the rates alone cannot tell
    assert H.ood_gain_from_decisions(ev).verdict == H.CANNOT_TELL
    # sft_reflection's decisions cost it 40 points, rl's 2: the gap is decisions
    docs = {"rl": _regret_doc(0.02), "sft_reflection": _regret_doc(0.4)}
    claim = H.ood_gain_from_decisions(ev, docs, hashes)
    assert claim.verdict == H.SUPPORTED and "regret 40.0%" in claim.numbers
    # sft_reflection's decisions cost it nothing: optimal decisions cannot give it rl's 30 points
    docs = {"rl": _regret_doc(0.0), "sft_reflection": _regret_doc(0.01)}
    assert H.ood_gain_from_decisions(ev, docs, hashes).verdict == H.CONTRADICTED
    # a document of another checkpoint version is not used
    assert H.ood_gain_from_decisions(ev, docs, {"rl": "h", "sft_reflection": "other"}).verdict == H.CANNOT_TELL
    # the two tests disagree: cannot tell
    ev_rates = _evals(gain, ps_same, {"rl": 90, "sft_reflection": 20})
    assert H.ood_gain_from_decisions(ev_rates, docs, hashes).verdict == H.CANNOT_TELL
    # no gain: cannot tell whatever the regret
    flat = _evals({"rl": 30, "sft_reflection": 30})
    docs = {"rl": _regret_doc(0.0), "sft_reflection": _regret_doc(0.4)}
    assert H.ood_gain_from_decisions(flat, docs, hashes).verdict == H.CANNOT_TELL


def test_pooled_regret_is_the_ood_mean():
    mean, lo, hi, n = H.pooled_regret(_regret_doc(0.25))
    assert (mean, n) == (0.25, 200) and lo < 0.25 < hi
    assert H.pooled_regret({"regret": []}) is None and H.pooled_regret(None) is None
