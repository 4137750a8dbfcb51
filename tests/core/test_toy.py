"""The Figure-1 toy (ds_core/analysis/toy.py): the paper's picture with the defaults, hand-checked gradients,
determinism, the length effect of the KL, validation, serialisation."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math

import numpy as np
import pytest
import torch

from ds_core.analysis.toy import (
    ToyConfig,
    ToyRun,
    attribution_ratio,
    enumerate_trajectories,
    grpo_advantage,
    run_toy,
    step_gradients,
)
from ds_core.objectives.terms import group_advantages

LOG3 = math.log(3.0)


@pytest.fixture(scope="module")
def default_run() -> ToyRun:
    return run_toy(ToyConfig())


def _dnorm(f, prefix):
    return np.hypot(f[f"{prefix}_dC"], f[f"{prefix}_dW"])


# ---------------------------------------------------------------- the paper's picture
def test_default_run_shows_figure_1_picture(default_run):
    cfg, f = default_run.config, default_run.to_frame()
    assert len(f) == cfg.steps and (f["step"] == np.arange(cfg.steps)).all()
    # surrogate: balanced, about 1:1 at every step (Theorem 3.1)
    assert 0.5 < f["surrogate_ratio"].mean() < 2 and f["surrogate_ratio"].between(0.5, 2).all()
    # KL: 0 exactly at each reset (theta == ref), above 2:1 at every other step (Theorem 3.2)
    resets = f["reset"].to_numpy()
    assert (f.index[resets] % cfg.reset_period == 0).all() and resets.sum() == 10
    assert (f.loc[resets, ["kl_grad_s", "kl_grad_dC", "kl_grad_dW"]] == 0).all().all()
    assert f.loc[resets, "kl_ratio"].isna().all()
    assert (f.loc[~resets, "kl_ratio"] > 2).all()
    # the KL gradient on theta_s is about an order of magnitude above the decision parameters'
    kl_s_over_d = f["kl_grad_s"].abs().mean() / _dnorm(f, "kl_grad").mean()
    assert 5 < kl_s_over_d < 50
    # KL pulls back toward the reference: opposite sign to the drift, on every parameter
    for p in ("s", "dC", "dW"):
        drift = (f[f"theta_{p}"] - f[f"ref_{p}"])[~resets]
        assert (np.sign(f.loc[~resets, f"kl_grad_{p}"]) == -np.sign(drift)).all()
    # net update: a positive push on the decisions at every step, theta_s held near the reference
    assert (f["update_dC"] > 0).all() and (f["update_dW"] > 0).all()
    kept_s = f["update_s"].abs().sum() / (cfg.lr * f["surrogate_grad_s"].abs().sum())
    kept_d = _dnorm(f, "update").sum() / (cfg.lr * _dnorm(f, "surrogate_grad").sum())
    assert kept_s < 0.4 and kept_d > 0.85
    assert (f["theta_s"] - f["ref_s"]).abs().max() < 0.5 * (
        np.hypot(f["theta_dC"] - f["ref_dC"], f["theta_dW"] - f["ref_dW"])
    ).max()
    # learning happens, mostly through the decision policy
    assert f["reward_mean"].iloc[-1] > f["reward_mean"].iloc[0] + 0.4
    assert f["p_dW"].iloc[-1] - f["p_dW"].iloc[0] > f["p_s"].iloc[-1] - f["p_s"].iloc[0]
    s = default_run.summary()
    assert s["kl_grad_s_over_d"] == pytest.approx(kl_s_over_d)
    assert s["update_kept_s"] == pytest.approx(kept_s)
    assert s["update_kept_d"] == pytest.approx(kept_d)


@pytest.mark.parametrize("kw", [{"kl_estimator": "k1"}, {"mode": "sample"}])
def test_picture_holds_for_k1_and_monte_carlo(kw):
    f = run_toy(ToyConfig(**kw)).to_frame()
    assert 0.5 < f["surrogate_ratio"].mean() < 2
    assert f["kl_ratio"][~f["reset"]].median() > 5
    assert f["kl_grad_s"].abs().mean() > 5 * _dnorm(f, "kl_grad").mean()


def test_kl_ratio_grows_with_attempt_length():
    med = [np.nanmedian(run_toy(ToyConfig(attempt_length=n)).to_frame()["kl_ratio"]) for n in (1, 4, 16)]
    assert med[0] < med[1] < med[2] and med[2] > 4 * med[0]
    # at a fixed (theta, ref) the k3 KL's sampling part is exactly linear in L, its decision part
    # and the surrogate do not depend on L
    theta, ref = [0.2, 0.5, -0.3], [-0.1, 0.1, -0.6]
    g = {n: step_gradients(ToyConfig(attempt_length=n), theta, ref) for n in (1, 4, 16)}
    for n in (4, 16):
        assert g[n]["kl_grad"][0] == pytest.approx(n * g[1]["kl_grad"][0], rel=1e-12)
        np.testing.assert_allclose(g[n]["kl_grad"][1:], g[1]["kl_grad"][1:], rtol=1e-12)
        np.testing.assert_allclose(g[n]["surrogate_grad"], g[1]["surrogate_grad"], rtol=1e-12)
        assert attribution_ratio(g[n]["kl_grad"]) == pytest.approx(n * attribution_ratio(g[1]["kl_grad"]), rel=1e-12)


@pytest.mark.parametrize(
    "kw", [{}, {"kl_estimator": "k1"}, {"mode": "sample"}, {"mode": "sample", "kl_estimator": "k1"}]
)
def test_zero_kl_weight_gives_zero_kl_gradients(kw):
    f = run_toy(ToyConfig(kl_weight=0.0, steps=30, **kw)).to_frame()
    assert (f[["kl_grad_s", "kl_grad_dC", "kl_grad_dW"]] == 0).all().all()
    assert f["kl_ratio"].isna().all()
    for p in ("s", "dC", "dW"):
        np.testing.assert_allclose(f[f"update_{p}"], 0.1 * f[f"surrogate_grad_{p}"], rtol=1e-12)


def test_determinism():
    a = run_toy(ToyConfig(mode="sample", steps=40, seed=3)).to_frame()
    b = run_toy(ToyConfig(mode="sample", steps=40, seed=3)).to_frame()
    c = run_toy(ToyConfig(mode="sample", steps=40, seed=4)).to_frame()
    assert a.equals(b) and not a.equals(c)
    e1 = run_toy(ToyConfig(steps=40, seed=1)).to_frame()
    e2 = run_toy(ToyConfig(steps=40, seed=2)).to_frame()
    assert e1.equals(e2)  # exact mode: no randomness at all


# ---------------------------------------------------------------- hand-checked gradients
# max_attempts = 2 at theta = 0 (every probability 1/2). The six trajectories, by hand:
#   trajectory     P      R  score wrt (theta_s, theta_dC, theta_dW)
#   C STOP        1/4    1   (+1/2, +1/2,    0)   d/dx log sig(x) = 1 - p, d/dx log sig(-x) = -p
#   W STOP        1/4    0   (-1/2,    0, -1/2)
#   C RES C       1/8    1   (+1,   -1/2,    0)   (no decision token after attempt 2: the cap)
#   C RES W       1/8    0   (0,    -1/2,    0)
#   W RES C       1/8    1   (0,       0, +1/2)
#   W RES W       1/8    0   (-1,      0, +1/2)
HAND = [
    (1 / 4, 1, (0.5, 0.5, 0)),
    (1 / 4, 0, (-0.5, 0, -0.5)),
    (1 / 8, 1, (1, -0.5, 0)),
    (1 / 8, 0, (0, -0.5, 0)),
    (1 / 8, 1, (0, 0, 0.5)),
    (1 / 8, 0, (-1, 0, 0.5)),
]


def test_surrogate_gradient_by_hand():
    # E[R] = 1/2. Group of G = 2: the other rollout is correct w.p. 1/2; a mixed group has mean
    # 1/2 and unbiased std sqrt(1/2), so E[A | R=1] = +c, E[A | R=0] = -c, c = 1/2 * 1/2 / (std+eps)
    c = 0.25 / (math.sqrt(0.5) + 1e-6)
    expected = sum(p * (c if r else -c) * np.array(s) for p, r, s in HAND)
    np.testing.assert_allclose(expected, [c / 2, c / 8, c / 8], rtol=1e-15)  # the table, summed
    cfg = ToyConfig(max_attempts=2, group_size=2)
    g = step_gradients(cfg, [0.0, 0.0, 0.0], [0.0, 0.0, 0.0])
    np.testing.assert_allclose(g["surrogate_grad"], expected, rtol=1e-12)
    assert g["reward_mean"] == pytest.approx(0.5) and g["attempts_mean"] == pytest.approx(1.5)
    np.testing.assert_array_equal(g["kl_grad"], 0.0)  # theta == ref
    assert attribution_ratio(g["surrogate_grad"]) == pytest.approx(4 / math.sqrt(2))


def test_exact_surrogate_equals_enumerated_groups():
    """E over every ordered group of G = 3 trajectories (6^3, P = product) of
    mean_i A_i grad log P(tau_i), with A from ds_core.objectives.group_advantages."""
    theta = np.array([0.3, -0.7, 0.9])
    p = 1 / (1 + np.exp(-theta))
    jac = np.array(
        [[1 - p[0], 0, 0], [-p[0], 0, 0], [0, 1 - p[1], 0], [0, -p[1], 0], [0, 0, 1 - p[2]], [0, 0, -p[2]]]
    )  # d log-prob of each token type / d theta
    counts, reward, mult = (t.numpy() for t in enumerate_trajectories(2))
    assert (mult == 1).all() and len(counts) == 6
    logp = np.log([p[0], 1 - p[0], p[1], 1 - p[1], p[2], 1 - p[2]])
    prob = np.exp(counts @ logp)
    assert prob.sum() == pytest.approx(1.0)
    expected = np.zeros(3)
    for idx in itertools.product(range(6), repeat=3):
        adv = group_advantages(torch.tensor(reward[list(idx)]), group_size=3).double().numpy()
        w = np.prod(prob[list(idx)])
        expected += w * sum(a * counts[i] @ jac for a, i in zip(adv, idx)) / 3
    g = step_gradients(ToyConfig(max_attempts=2, group_size=3), theta, theta)
    np.testing.assert_allclose(g["surrogate_grad"], expected, rtol=1e-6)


def test_kl_k3_gradient_by_hand():
    # L = 3, w = 0.1, max 2 attempts, theta = 0, ref: p_s = p_dC = 3/4 (logit log 3).
    # k3 = r - log r - 1 with r = pi_ref/pi; d k3 / d logp = 1 - r. Attempt token: correct
    # r = 3/2, wrong r = 1/2, so d/dtheta_s = (-1/2)(1/2) = (1/2)(-1/2) = -1/4 per token, and
    # E[attempts] = 3/2 -> dKL/dtheta_s = -L * 3/2 / 4. STOP|C r = 3/2, RESAMPLE|C r = 1/2 ->
    # -1/4 per decision after a correct attempt; E[#] = P(first correct) = 1/2 -> -1/8.
    cfg = ToyConfig(max_attempts=2, attempt_length=3, kl_weight=0.1)
    g = step_gradients(cfg, [0.0, 0.0, 0.0], [LOG3, LOG3, 0.0])
    np.testing.assert_allclose(g["kl_grad"], [0.1 * 3 * 1.5 / 4, 0.1 / 8, 0.0], atol=1e-15)
    assert attribution_ratio(g["kl_grad"]) == pytest.approx(9.0)
    # E[KL(tau)]: per-token k3 values: attempt 1/2 - log(3/2) or 1/2 - log(1/2) (mean
    # 1/2 log(4/3)); decision after correct the same; after wrong 0
    k = 0.5 * math.log(4 / 3)
    assert g["kl"] == pytest.approx(3 * 1.5 * k + 0.5 * k)


def test_kl_k1_gradient_by_hand():
    # k1 in the return: the exact gradient of E[KL(tau)] = L * E[T] * KL_s (decisions at ref).
    # KL_s(p) = p log(p / (3/4)) + (1-p) log((1-p) / (1/4)); dKL_s/dtheta_s at p = 1/2:
    # (log(2/3) - log 2) / 4 = -log(3)/4, KL_s = log(4/3)/2. E[T] = 1 + p_s(1-p_dC) + (1-p_s)p_dW:
    # dE[T]/dtheta_s = 0, dE[T]/dtheta_dC = -1/8, dE[T]/dtheta_dW = +1/8.
    cfg = ToyConfig(max_attempts=2, attempt_length=3, kl_weight=0.1, kl_estimator="k1")
    g = step_gradients(cfg, [0.0, 0.0, 0.0], [LOG3, 0.0, 0.0])
    kl_s = 0.5 * math.log(4 / 3)
    expected = -0.1 * np.array([3 * 1.5 * -LOG3 / 4, 3 * kl_s * -1 / 8, 3 * kl_s / 8])
    np.testing.assert_allclose(g["kl_grad"], expected, rtol=1e-10)
    assert g["kl"] == pytest.approx(3 * 1.5 * kl_s)


def test_monte_carlo_matches_exact():
    theta, ref = [-0.4, 0.3, 0.2], [-0.7, 0.1, -0.2]
    ex = step_gradients(ToyConfig(), theta, ref)
    mc = step_gradients(ToyConfig(mode="sample", batch=4000, seed=0), theta, ref)
    np.testing.assert_allclose(mc["surrogate_grad"], ex["surrogate_grad"], atol=0.02)
    np.testing.assert_allclose(mc["kl_grad"], ex["kl_grad"], atol=0.02)
    assert mc["reward_mean"] == pytest.approx(ex["reward_mean"], abs=0.01)
    assert mc["attempts_mean"] == pytest.approx(ex["attempts_mean"], abs=0.03)


def test_enumeration_and_advantages():
    for m in (1, 3, 6):
        counts, reward, mult = enumerate_trajectories(m)
        assert len(counts) == m * (m + 1)
        theta = torch.tensor([0.4, -0.2, 1.1], dtype=torch.float64)
        p = torch.sigmoid(theta)
        lp = torch.log(torch.stack([p[0], 1 - p[0], p[1], 1 - p[1], p[2], 1 - p[2]]))
        prob = mult * torch.exp(counts @ lp)
        assert float(prob.sum()) == pytest.approx(1.0)
        if m == 1:
            assert float(prob @ reward) == pytest.approx(float(p[0]))
    r = torch.tensor([[1.0, 0, 0, 1], [1, 1, 1, 1], [0, 0, 0, 1], [0, 0, 0, 0]])
    a = grpo_advantage(r, r.sum(1, keepdim=True), 4)
    torch.testing.assert_close(a.float(), group_advantages(r))


# ---------------------------------------------------------------- config, result objects
@pytest.mark.parametrize(
    "kw",
    [
        {"kl_weight": -0.1},
        {"kl_weight": float("nan")},
        {"lr": 0.0},
        {"lr": float("inf")},
        {"attempt_length": 0},
        {"attempt_length": 2.0},
        {"reset_period": 0},
        {"steps": 0},
        {"group_size": 1},
        {"batch": 0},
        {"max_attempts": 0},
        {"max_attempts": 65},
        {"init_s": float("nan")},
        {"init_dW": "1"},
        {"seed": 1.5},
        {"steps": True},
        {"kl_estimator": "k2"},
        {"mode": "mc"},
        {"seed": -1},
    ],
)
def test_config_validation(kw):
    with pytest.raises(ValueError):
        ToyConfig(**kw)


def test_config_is_frozen_and_normalised():
    cfg = ToyConfig(attempt_length=np.int64(4), kl_weight=1, seed=np.int32(2))
    assert type(cfg.attempt_length) is int and type(cfg.kl_weight) is float
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.lr = 1.0
    with pytest.raises(ValueError):
        dataclasses.replace(cfg, lr=-1.0)


def test_to_dict_and_frame(default_run):
    d = json.loads(json.dumps(default_run.to_dict(), allow_nan=False))
    assert d["config"] == dataclasses.asdict(default_run.config)
    steps = d["steps"]
    assert len(steps["kl_ratio"]) == default_run.config.steps
    assert steps["kl_ratio"][0] is None and steps["kl_ratio"][1] > 2 and steps["reset"][0] is True
    assert d["summary"]["kl_ratio_min"] > 2
    f = default_run.to_frame()
    for col in (
        "p_s",
        "p_dC",
        "p_dW",
        "reward_mean",
        "surrogate_ratio",
        "kl_ratio",
        "update_ratio",
        "theta_s",
        "ref_dW",
        "kl",
    ):
        assert col in f.columns
    for p in ("s", "dC", "dW"):
        for k in ("surrogate_grad", "kl_grad", "update"):
            assert f"{k}_{p}" in f.columns
    f.loc[0, "p_s"] = -1.0  # a copy: the run is unchanged
    assert default_run.to_frame().loc[0, "p_s"] > 0
    with pytest.raises((TypeError, ValueError)):
        default_run.columns["p_s"][0] = 0.0


def test_attribution_ratio():
    assert attribution_ratio([3.0, 3.0, -4.0]) == pytest.approx(0.6)
    assert math.isnan(attribution_ratio([0.0, 0.0, 0.0]))
    assert attribution_ratio([1.0, 0.0, 0.0]) == math.inf
