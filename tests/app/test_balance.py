"""ds_core.balance and its sibling modules (balance_toy, balance_sweep, balance_dataset,
balance_results): the toy's balance views (Theorem 3.1 / 3.2 numbers), the toy SFT by hand, the
real-model length sweep and dataset-level results (store round trips, the per-episode identity
of surrogate / SFT / k1 ratios), log-log slopes, the shipped precompute and its command."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

import ds_core.analysis.balance.dataset as BD
import ds_core.analysis.balance.length_sweep as BS
import ds_core.analysis.balance.results as BR
import ds_core.analysis.balance.shipped as B
import ds_core.analysis.toy_sweeps as BT
from ds_core.analysis.toy import ToyConfig, run_toy
from ds_core.balance import main as balance_main
from ds_core.episodes.tasks import Problem
from ds_core.models.checkpoint import Card, content_hash, load_checkpoint, save_checkpoint
from ds_core.models.model import init_model
from ds_core.objectives import LABELS
from ds_core.paths import SHIPPED_DIR
from ds_core.store import ResultsStore
from ui.services.balance_toy import TOY_CONTROLS

TINY = dict(hidden=32, layers=1, heads=2)


# =============================================================================== the toy
def test_toy_sft_gradient_by_hand():
    # theta = 0: every probability 1/2. Reflection demos: E_C = 1, E_W = 0.4 + 2 * 0.2 = 0.8.
    g = BT.toy_sft_gradient([0.0, 0.0, 0.0], 3)
    np.testing.assert_allclose(g, [3 * (0.5 - 0.8 * 0.5), 0.5, 0.8 * 0.5], rtol=1e-15)
    # SFT without reflection: no wrong attempts, no RESAMPLE tokens -> no push on theta_dW
    np.testing.assert_allclose(BT.toy_sft_gradient([0.0, 0.0, 0.0], 3, BT.SINGLE_DEMOS), [1.5, 0.5, 0.0])
    # exactly linear in L on the sampling logit, independent of L on the decision logits
    a, b = BT.toy_sft_gradient([0.3, -1.0, 2.0], 1), BT.toy_sft_gradient([0.3, -1.0, 2.0], 17)
    assert b[0] == pytest.approx(17 * a[0], rel=1e-12) and (a[1:] == b[1:]).all()
    for bad in [(0.5, 0.6), (), (1.2, -0.2)]:
        with pytest.raises(BR.BalanceError):
            BT.toy_sft_gradient([0, 0, 0], 3, bad)


def test_toy_view_extends_the_run():
    cfg = ToyConfig(steps=60)
    v = BT.toy_view(cfg)
    ref = run_toy(cfg).to_frame()
    pd.testing.assert_frame_equal(v.frame[list(ref.columns)], ref)
    row = v.frame.iloc[17]
    g = BT.toy_sft_gradient([row.theta_s, row.theta_dC, row.theta_dW], cfg.attempt_length)
    np.testing.assert_allclose([row.sft_grad_s, row.sft_grad_dC, row.sft_grad_dW], g)
    assert row.sft_ratio == pytest.approx(abs(g[0]) / math.hypot(g[1], g[2]))
    assert v.summary["sft_ratio_median"] == pytest.approx(v.frame["sft_ratio"].median())
    assert {"surrogate_ratio_median", "kl_ratio_median", "update_kept_d"} <= set(v.table["figure"])


def test_toy_same_states_sweep_is_what_the_theorems_predict():
    lengths = (1, 2, 8, 32)
    sw = BT.toy_length_sweep(ToyConfig(), lengths, max_states=20)
    assert set(sw["objective"]) == set(BT.TOY_OBJECTIVES) and len(sw) == 4 * len(lengths)
    med = sw.pivot(index="attempt_length", columns="objective", values="median")
    # Theorem 3.1 (surrogate): the same number at every L (every attempt counts once)
    np.testing.assert_allclose(med["surrogate"], med["surrogate"].iloc[0], rtol=1e-12)
    assert 0.5 < med["surrogate"].iloc[0] < 2  # about 1:1
    # Theorem 3.2 (k3 KL) and the toy SFT: exactly proportional to L at the same states
    for o in ("kl", "sft"):
        np.testing.assert_allclose(med[o] / med.index, med[o].iloc[0], rtol=1e-9)
    assert med.loc[8, "kl"] > 2  # above 2:1 (the paper's L is unpublished)
    np.testing.assert_allclose(sw["median_over_L"], sw["median"] / sw["attempt_length"])
    # the reset states (KL gradient exactly 0) are left out of the KL's statistics only
    n = sw.set_index(["attempt_length", "objective"])["n"]
    assert n[(1, "kl")] < n[(1, "surrogate")] == 20


def test_toy_retrain_sweep_and_k1():
    sw = BT.toy_length_sweep(ToyConfig(steps=100), (1, 4, 16), mode="retrain")
    med = sw.pivot(index="attempt_length", columns="objective", values="median")
    assert med["kl"].is_monotonic_increasing and med.loc[16, "kl"] > 4 * med.loc[1, "kl"]
    assert med["surrogate"].between(0.5, 2).all()
    k1 = BT.toy_length_sweep(ToyConfig(kl_estimator="k1", steps=60), (1, 4, 16), max_states=10)
    m1 = k1.pivot(index="attempt_length", columns="objective", values="median")
    assert m1["kl"].is_monotonic_increasing and m1.loc[16, "kl"] > 8 * m1.loc[1, "kl"]


@pytest.mark.parametrize("kw", [{"mode": "bogus"}, {"lengths": ()}, {"lengths": (0, 2)}, {"lengths": ("a",)}])
def test_toy_sweep_rejects_bad_settings(kw):
    args = {"lengths": (1, 2), **kw}
    with pytest.raises(BR.BalanceError):
        BT.toy_length_sweep(ToyConfig(steps=10), args.pop("lengths"), **args)


def test_controls_cover_toy_config():
    from dataclasses import fields

    assert {c.name for c in TOY_CONTROLS} == {f.name for f in fields(ToyConfig)}
    defaults = ToyConfig()
    for c in TOY_CONTROLS:
        v = getattr(defaults, c.name)
        assert (v in c.options) if c.kind == "choice" else (c.lo <= v <= c.hi)


# =============================================================================== log-log slopes
def test_loglog_slopes_exact():
    x = np.array([10, 20, 40, 80, 160] * 2)
    df = pd.DataFrame(
        {
            "checkpoint": "c",
            "objective": ["a"] * 5 + ["b"] * 5,
            "n_sampling": x,
            "ratio_SD": np.r_[5 * x[:5] ** 0.7, np.full(5, 3.0)],
            "ratio_SD_per_token": 1.0,
            "norm_G_S": 1.0,
            "norm_G_D": np.nan,
        }
    )
    s = BS.loglog_slopes(df).set_index(["objective", "metric"])
    assert s.loc[("a", "ratio_SD"), "slope"] == pytest.approx(0.7)
    assert s.loc[("a", "ratio_SD"), "r2"] == pytest.approx(1.0)
    assert s.loc[("a", "ratio_SD"), "growth"] == pytest.approx(16**0.7)
    assert s.loc[("b", "ratio_SD"), "slope"] == pytest.approx(0.0, abs=1e-12)
    assert s.loc[("a", "norm_G_D"), "n"] == 0 and math.isnan(s.loc[("a", "norm_G_D"), "slope"])
    assert len(BS.loglog_slopes(df.iloc[0:0])) == 0


def test_frames_survive_json_with_inf_and_nan():
    df = pd.DataFrame(
        {
            "checkpoint": ["a", "b"],
            "objective": ["x", "y"],
            "episode": [0, 1],
            "ratio_SD": [math.inf, 2.5],
            "cos_SD": [math.nan, -0.5],
            "correct": [True, False],
        }
    )
    back = BR.frame_from_blob(json.loads(json.dumps(BR.frame_to_blob(df), allow_nan=False)))
    assert back["ratio_SD"].tolist()[0] == math.inf and back["ratio_SD"].tolist()[1] == 2.5
    assert math.isnan(back["cos_SD"][0]) and back["correct"].tolist() == [True, False]
    assert back["episode"].tolist() == [0, 1]


# =============================================================================== real models
@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, char_tokenizer):
    """base and rl (card.parent = base) tiny random Llamas side by side."""
    root = tmp_path_factory.mktemp("tiny")
    h = save_checkpoint(
        root / "base", init_model(char_tokenizer, "llama", seed=0, **TINY), char_tokenizer, Card(condition="tiny-base")
    )
    save_checkpoint(
        root / "rl",
        init_model(char_tokenizer, "llama", seed=1, **TINY),
        char_tokenizer,
        Card(condition="tiny-rl", parent=h),
    )
    return root


@pytest.fixture
def store(tmp_path):
    return ResultsStore(tmp_path / "data")


@pytest.fixture(scope="module")
def shipped_rl():
    return load_checkpoint(SHIPPED_DIR / "rl")


def test_trace_episode_roles(char_tokenizer):
    p = Problem(123, 4567)
    ep = BS.trace_episode(p, char_tokenizer)
    assert ep.correct and ep.n_attempts == 1 and ep.roles.count("decision") == 1
    assert ep.roles.count("sampling") == len(ep.attempts[0].text)
    ep2 = BS.trace_episode(p, char_tokenizer, n_wrong=2)
    assert ep2.correct and ep2.n_attempts == 3 and ep2.roles.count("decision") == 3
    assert [a.correct for a in ep2.attempts] == [False, False, True]
    eps = BS.sweep_episodes(char_tokenizer, "1x1,3x3,6x12", per_size=2)
    n_s = [np.mean([e.roles.count("sampling") for e in v]) for v in eps.values()]
    assert list(eps) == ["1x1", "3x3", "6x12"] and n_s == sorted(n_s) and n_s[-1] > 10 * n_s[0]
    with pytest.raises(BR.BalanceError):
        BS.sweep_episodes(char_tokenizer, "3x3", n_wrong=5)


def test_surrogate_sft_and_k1_ratios_coincide_per_episode(shipped_rl):
    """The measured fact the page states: on one episode the surrogate (any A), sft_sum, sft_mean
    and kl_k1 weight every token's grad log p by one constant, so their S:D ratios are equal."""
    from ds_core.attribution.gradient import attribute
    from ds_core.attribution.reference import resolve_ref

    ref, _ = resolve_ref(shipped_rl)
    ep = BS.trace_episode(Problem(482, 913), shipped_rl.tokenizer, n_wrong=1)
    r = {
        o: attribute(
            shipped_rl,
            ep,
            o,
            advantage=1.0 if o == "surrogate" else None,
            ref_model=ref if o.startswith("kl") else None,
            norms=False,
        ).figures.ratio_SD
        for o in ("surrogate", "sft_sum", "sft_mean", "kl_k1", "kl_k3")
    }
    neg = attribute(shipped_rl, ep, "surrogate", advantage=-3.0, norms=False).figures.ratio_SD
    for o in ("sft_sum", "sft_mean", "kl_k1"):
        assert r[o] == pytest.approx(r["surrogate"], rel=1e-4)
    assert neg == pytest.approx(r["surrogate"], rel=1e-4)
    assert abs(math.log10(r["kl_k3"] / r["surrogate"])) > 0.1  # k3 weights tokens by (1 - r_t)


def test_model_length_sweep_and_store_round_trip(tiny_dir, store):
    ck = load_checkpoint(tiny_dir / "rl")
    seen = []
    res = BS.model_length_sweep(
        ck,
        "1x1,3x3,6x12",
        per_size=2,
        objectives="surrogate,kl_k3,sft_sum",
        store=store,
        progress=lambda f, t: seen.append(f),
    )
    f = res.frame
    assert len(f) == 3 * 2 * 3 and set(f["checkpoint"]) == {"rl"} and (f["n_decision"] == 1).all()
    assert (f["n_wrong"] == 0).all() and res.ref_hash == content_hash(tiny_dir / "base")
    assert seen[0] == 0.0 and seen[-1] == 1.0 and seen == sorted(seen)
    np.testing.assert_allclose(f["log10_ratio_SD"], np.log10(f["ratio_SD"]))
    assert set(res.summary["metric"]) == set(BS.SWEEP_METRICS) and len(res.summary) == 3 * 4
    back = BS.stored_length_sweep(store, tiny_dir / "rl", "1x1,3x3,6x12", 2, 0, "surrogate,kl_k3,sft_sum")
    assert back is not None and back.source == "store"
    pd.testing.assert_frame_equal(back.frame.drop(columns="cached"), f.drop(columns="cached"), check_dtype=False)
    assert BS.stored_length_sweep(store, tiny_dir / "rl", "1x1,3x3", 2, 0, "surrogate") is None
    again = BS.model_length_sweep(ck, "1x1,3x3,6x12", per_size=2, objectives="surrogate,kl_k3,sft_sum", store=store)
    assert again.n_computed == 0 and again.n_cached == len(f)


def test_dataset_balance_and_store_round_trip(tiny_dir, store):
    base = load_checkpoint(tiny_dir / "base")
    res = BD.dataset_balance(base, "3x3", n=2, objectives="surrogate,kl_k3", store=store)
    assert set(res.frame["objective"]) == {"surrogate"}  # base has no parent: no KL
    assert any("no KL reference" in n for n in res.notes)
    assert res.summary["checkpoint"].eq("base").all() and "ratio_SD_median" in res.summary
    back = BD.stored_dataset(store, tiny_dir / "base", "3x3", 2, "surrogate,kl_k3")
    assert back is not None and back.source == "store" and len(back.frame) == len(res.frame)
    assert BD.stored_dataset(store, tiny_dir / "base", "3x3", 3, "surrogate,kl_k3") is None
    rl = BD.dataset_balance(load_checkpoint(tiny_dir / "rl"), "3x3", n=2, objectives="kl_k3")
    assert len(rl.frame) <= 2 and set(rl.frame["objective"]) <= {"kl_k3"}  # no store: computed
    with pytest.raises(BR.BalanceError):
        BD.dataset_balance(base, "3x3", n=0)
    with pytest.raises(BR.BalanceError):
        BD.dataset_balance(base, "3x3", n=1, objectives="nope")


def test_precompute_command_writes_a_loadable_file(tiny_dir, tmp_path, capsys):
    out = tmp_path / "b.json"
    rc = balance_main(
        [
            "precompute",
            "--out",
            str(out),
            "--checkpoints",
            str(tiny_dir),
            "--names",
            "base,rl",
            "--sizes",
            "3x3",
            "--n",
            "1",
            "--sweep-sizes",
            "1x1,3x3",
            "--per-size",
            "1",
            "--no-store",
        ]
    )
    assert rc == 0 and "wrote" in capsys.readouterr().out
    sh = B.load_shipped(out)
    assert set(sh.dataset["checkpoint"]) <= {"base", "rl"} and set(sh.sweep["checkpoint"]) == {"base", "rl"}
    assert sh.meta["checkpoints"]["rl"]["hash"] == content_hash(tiny_dir / "rl")
    assert sh.stale({"rl": content_hash(tiny_dir / "rl")}) == [] and sh.stale({"rl": "x"}) == ["rl"]
    rc = balance_main(
        ["precompute", "--out", str(out), "--checkpoints", str(tiny_dir), "--names", "nope", "--no-store"]
    )
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    for p in (bad, tmp_path / "missing.json"):
        with pytest.raises(BR.BalanceError):
            B.load_shipped(p)


# =============================================================================== the shipped file
@pytest.fixture(scope="module")
def shipped():
    if not B.SHIPPED_FILE.is_file():
        pytest.skip("no shipped precompute")
    return B.load_shipped()


def test_shipped_precompute_is_small_current_and_complete(shipped):
    assert B.SHIPPED_FILE.stat().st_size < 1_000_000
    hashes = {n: content_hash(SHIPPED_DIR / n) for n in B.SHIPPED_CHECKPOINTS}
    assert shipped.stale(hashes) == []
    assert set(shipped.dataset["checkpoint"]) == set(B.SHIPPED_CHECKPOINTS)
    assert set(shipped.sweep["checkpoint"]) == set(B.SHIPPED_CHECKPOINTS)
    # every checkpoint with a parent has the KL rows; base has none
    for name, objs in shipped.dataset.groupby("checkpoint")["objective"]:
        kl = {"kl_k1", "kl_k3"} & set(objs)
        assert bool(kl) == (name != "base")
    json.loads(B.SHIPPED_FILE.read_text())  # plain JSON


def test_shipped_numbers_show_the_per_episode_identity(shipped):
    for df in (shipped.dataset, shipped.sweep):
        w = df.pivot_table(index=["checkpoint", "size", "episode"], columns="objective", values="ratio_SD")
        for o in ("sft_sum", "sft_mean"):
            np.testing.assert_allclose(w[o], w["surrogate"], rtol=1e-3)
        k1 = w["kl_k1"].dropna()
        np.testing.assert_allclose(k1, w.loc[k1.index, "surrogate"], rtol=1e-3)


@pytest.mark.parametrize("objective,tol", [("sft_sum", 1e-4), ("kl_k3", 1e-2)])
def test_shipped_sweep_reproduces(shipped, shipped_rl, objective, tol):
    """One row of the shipped sweep recomputed by this code (the file is this code's output).
    KL k3's ratio (~4e5) divides by a |G_D| that is nearly cancelled: it moved by 0.2% between two
    x86 CPUs (BLAS summation order), so it is held to 1%, the well-conditioned SFT ratio to 1e-4."""
    row = (
        shipped.sweep[
            (shipped.sweep["checkpoint"] == "rl")
            & (shipped.sweep["size"] == "3x3")
            & (shipped.sweep["objective"] == objective)
        ]
        .sort_values("episode")
        .iloc[0]
    )
    res = BS.model_length_sweep(shipped_rl, "3x3", per_size=1, objectives=objective)
    assert res.frame["ratio_SD"].iloc[0] == pytest.approx(row["ratio_SD"], rel=tol)
    assert res.frame["n_sampling"].iloc[0] == row["n_sampling"]


# =============================================================================== charts
def test_charts_build_from_the_service_frames():
    from ui.charts import balance as C
    from ui.charts import balance_toy as CT

    v = BT.toy_view(ToyConfig(steps=40))
    fig = CT.figure1(v.frame)
    assert [a.text for a in fig.layout.annotations][:4] == [
        "(a) surrogate gradient",
        "(b) KL gradient",
        "(c) sampling : decision ratio",
        "(d) net update lr·(surrogate + KL)",
    ]
    assert len(fig.data) == 3 * 3 + 3 and fig.layout.yaxis3.type == "log"
    assert CT.figure1(v.frame, log_abs=True).layout.yaxis.type == "log"
    assert len(CT.toy_policy_fig(v.frame).data) == 7
    sw = BT.toy_length_sweep(ToyConfig(steps=20), (1, 4), max_states=5)
    lf = CT.toy_length_fig(sw, BT.TOY_LABELS)
    assert len(lf.data) == len(BT.TOY_OBJECTIVES) + 1 and list(lf.layout.xaxis.tickvals) == [1, 4]
    df = pd.DataFrame(
        {
            "checkpoint": ["a", "a", "b", "b"],
            "objective": ["surrogate", "kl_k3"] * 2,
            "outcome": ["correct_kept", "wrong_revised"] * 2,
            "size": "3x3",
            "n_sampling": [50, 50, 90, 90],
            "ratio_SD": [10.0, math.inf, 30.0, 5.0],
        }
    )
    df["log10_ratio_SD"] = np.log10(df["ratio_SD"])
    for kind in ("box", "violin", "strip"):
        assert len(C.dataset_fig(df, kind=kind).data) >= 2
    sf = C.sweep_fig(df, labels=LABELS)
    assert sf.layout.xaxis.type == "log" and len(sf.data) >= 4
    for empty in (
        C.dataset_fig(df.iloc[0:0]),
        C.sweep_fig(df.iloc[0:0]),
        CT.figure1(v.frame.iloc[0:0]),
        C.dataset_fig(df, metric="nope"),
    ):
        assert not empty.data and empty.layout.annotations


def test_dataset_balance_on_a_chat_model(tmp_path, chat_tokenizer):
    """The dataset view's numbers on a text-format (chat) checkpoint: episodes sampled with the
    chat template, decisions read by the lexical-marker tagger (the end of turn is STOP); the
    episodes that reach a verdict are attributed (shares add to 1), the others are counted in a
    note instead of failing the run."""
    import torch

    from ds_core.models.checkpoint import Card, save_checkpoint
    from ds_core.models.model import init_model
    from ds_core.models.sampling import SamplingConfig
    from ds_core.store import ResultsStore

    model = init_model(chat_tokenizer, "qwen2", hidden=32, layers=1, heads=2)
    end = chat_tokenizer.convert_tokens_to_ids("<|im_end|>")
    with torch.no_grad():  # the turn ends after a few tokens, or runs out of budget
        model.lm_head.weight[end] += 8 * model.lm_head.weight.abs().max()
    save_checkpoint(tmp_path / "chat", model, chat_tokenizer, Card("chat"))
    ck = load_checkpoint(tmp_path / "chat")
    r = BD.dataset_balance(
        ck,
        ["2x2"],
        n=6,
        objectives=["sft_sum", "surrogate"],
        store=ResultsStore(tmp_path / "d"),
        cfg=SamplingConfig(max_new_tokens=20),
    )
    f = r.frame
    assert len(f) > 0 and set(f["objective"]) == {"sft_sum", "surrogate"}
    assert (f["n_decision"] >= 1).all() and (f["n_sampling"] >= 1).all()
    assert ((f["share_S"] + f["share_D"] + f["share_O"] - 1).abs() < 1e-4).all()
    np.testing.assert_allclose(f["ratio_SD"], f["norm_G_S"] / f["norm_G_D"], rtol=1e-9)
    skipped = f["episode"].nunique() < 6
    assert any("without decision tokens" in n for n in r.notes) == skipped
