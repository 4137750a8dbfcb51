"""The Figure-1 toy (PAPER.md, "The toy of Figure 1"): three logits under GRPO + a reset KL.

Design notes: docs/DESIGN.md, section `ds_core.analysis.toy`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from types import MappingProxyType

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from ds_core.store.jsonio import to_jsonable

PARAMS = ("s", "dC", "dW")
# Token types, the columns of a trajectory's count vector.
TOKEN_TYPES = ("attempt_C", "attempt_W", "stop_C", "resample_C", "resample_W", "stop_W")
KL_ESTIMATORS = ("k1", "k3")
MODES = ("exact", "sample")
EPS = 1e-6  # GRPO std epsilon (as ds_core.objectives.group_advantages)
DT = torch.float64


@dataclass(frozen=True)
class ToyConfig:
    """The toy's settings, validated on construction (ValueError). The defaults show Figure 1's
    picture (pinned by tests/core/test_toy.py); `dataclasses.replace` re-validates."""

    kl_weight: float = 0.4  # w in J = surrogate - w * KL
    attempt_length: int = 10  # L: sampling tokens per attempt
    lr: float = 0.1  # plain gradient ascent step
    reset_period: int = 20  # reference := current theta every reset_period steps
    steps: int = 200
    group_size: int = 8  # G rollouts per group (GRPO)
    batch: int = 16  # groups per step ("sample" mode only)
    max_attempts: int = 8  # retry cap M
    init_s: float = -0.5  # initial logits: p_s = 0.38, p_dC = p_dW = 0.5
    init_dC: float = 0.0
    init_dW: float = 0.0
    seed: int = 0  # "sample" mode only
    kl_estimator: str = "k3"
    mode: str = "exact"

    def __post_init__(self):
        ints = {
            "attempt_length": (1, None),
            "reset_period": (1, None),
            "steps": (1, None),
            "group_size": (2, None),
            "batch": (1, None),
            "max_attempts": (1, 64),
            "seed": (0, None),
        }
        for name, (lo, hi) in ints.items():
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo or (hi is not None and v > hi):
                raise ValueError(f"{name} must be an int in [{lo}, {hi or 'inf'}], got {v!r}")
            object.__setattr__(self, name, int(v))
        for name in ("kl_weight", "lr", "init_s", "init_dC", "init_dW"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.number)) or not math.isfinite(v):
                raise ValueError(f"{name} must be a finite number, got {v!r}")
            object.__setattr__(self, name, float(v))
        if self.kl_weight < 0 or self.lr <= 0:
            raise ValueError(f"need kl_weight >= 0 and lr > 0, got kl_weight={self.kl_weight}, lr={self.lr}")
        for name, allowed in (("kl_estimator", KL_ESTIMATORS), ("mode", MODES)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")


# ---------------------------------------------------------------- the policy, per token type
def token_logprobs(theta: torch.Tensor) -> torch.Tensor:
    """log-prob of each TOKEN_TYPES entry under logits theta [3] -> [6]."""
    ls = F.logsigmoid
    return torch.stack([ls(theta[0]), ls(-theta[0]), ls(theta[1]), ls(-theta[1]), ls(theta[2]), ls(-theta[2])])


def attribution_ratio(g) -> float:
    """|g_s| / |(g_dC, g_dW)|: the sampling:decision ratio of a gradient over (s, dC, dW)."""
    s, d = abs(float(g[0])), math.hypot(float(g[1]), float(g[2]))
    if d == 0.0:
        return math.nan if s == 0.0 else math.inf
    return s / d


def grpo_advantage(r: torch.Tensor, n_correct: torch.Tensor, g: int) -> torch.Tensor:
    """A of a rollout with reward r in a group of g binary rewards with n_correct ones."""
    r, n = r.to(DT), n_correct.to(DT)
    std = torch.sqrt(n * (g - n) / (g * (g - 1)))
    adv = (r - n / g) / (std + EPS)
    return torch.where((n > 0) & (n < g), adv, torch.zeros_like(adv))


# ---------------------------------------------------------------- trajectories
def enumerate_trajectories(max_attempts: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """All trajectory classes: counts [N, 6] over TOKEN_TYPES, reward [N], multiplicity [N].

    A class is (T attempts, j correct among the first T-1 (each followed by RESAMPLE), the last
    attempt's correctness); the last attempt is followed by STOP unless T is the cap.
    """
    rows, rewards, mult = [], [], []
    for t in range(1, max_attempts + 1):
        for j in range(t):
            for last_ok in (1, 0):
                c = [j + last_ok, t - 1 - j + (1 - last_ok), 0, j, t - 1 - j, 0]
                if t < max_attempts:
                    c[2 if last_ok else 5] += 1
                rows.append(c)
                rewards.append(last_ok)
                mult.append(math.comb(t - 1, j))
    return (torch.tensor(rows, dtype=DT), torch.tensor(rewards, dtype=DT), torch.tensor(mult, dtype=DT))


def sample_trajectories(
    theta: torch.Tensor, max_attempts: int, n: int, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """n sampled trajectories: counts [n, 6] over TOKEN_TYPES and reward [n]."""
    p_s, p_dc, p_dw = torch.sigmoid(theta.detach()).tolist()
    counts = torch.zeros(n, 6, dtype=DT)
    reward = torch.zeros(n, dtype=DT)
    active = torch.ones(n, dtype=torch.bool)
    for k in range(max_attempts):
        ok = torch.rand(n, generator=gen, dtype=DT) < p_s
        counts[:, 0] += active & ok
        counts[:, 1] += active & ~ok
        if k == max_attempts - 1:  # the cap: no decision token, the episode ends
            reward = torch.where(active, ok.to(DT), reward)
            break
        u = torch.rand(n, generator=gen, dtype=DT)
        stop = torch.where(ok, u < p_dc, u >= p_dw)
        for col, m in ((2, ok & stop), (3, ok & ~stop), (4, ~ok & ~stop), (5, ~ok & stop)):
            counts[:, col] += active & m
        reward = torch.where(active & stop, ok.to(DT), reward)
        active = active & ~stop
    return counts, reward


# ---------------------------------------------------------------- one step's gradients
def step_gradients(cfg: ToyConfig, theta, ref, gen: torch.Generator | None = None) -> dict:
    """Surrogate and KL gradients of J = surrogate - kl_weight * KL at theta (ascent direction).

    Returns numpy arrays `surrogate_grad`, `kl_grad` [3] (order s, dC, dW) and floats
    `reward_mean`, `kl` (E[KL(tau)] estimate), `attempts_mean`. "sample" mode draws from `gen`
    (default: a fresh generator seeded with cfg.seed).
    """
    theta = torch.as_tensor(theta, dtype=DT).detach().clone().requires_grad_(True)
    ref = torch.as_tensor(ref, dtype=DT).detach()
    gen = gen if gen is not None else torch.Generator().manual_seed(cfg.seed)
    lp = token_logprobs(theta)
    g = cfg.group_size
    if cfg.mode == "exact":
        counts, reward, mult = enumerate_trajectories(cfg.max_attempts)
        weight = mult * torch.exp(counts @ lp.detach())  # P(class), sums to 1
        mu = float(weight @ reward)
        k = torch.arange(g, dtype=DT)  # correct among the others
        binom = torch.tensor([math.comb(g - 1, i) * mu**i * (1 - mu) ** (g - 1 - i) for i in range(g)], dtype=DT)
        a = torch.stack([binom @ grpo_advantage(torch.full_like(k, r), k + r, g) for r in (0.0, 1.0)])
        adv = a[reward.long()]
    else:
        n = cfg.batch * g
        counts, reward = sample_trajectories(theta, cfg.max_attempts, n, gen)
        weight = torch.full((n,), 1.0 / n, dtype=DT)
        groups = reward.view(cfg.batch, g)
        adv = grpo_advantage(groups, groups.sum(1, keepdim=True), g).reshape(-1)
    seq_logp = counts @ lp  # log P(tau), attempts once
    surrogate = (weight * adv * seq_logp).sum()
    ref_lp = token_logprobs(ref)
    if cfg.kl_estimator == "k3":
        d = ref_lp - lp
        per_token = torch.exp(d) - d - 1
    else:
        per_token = lp - ref_lp
    token_weight = torch.tensor([cfg.attempt_length] * 2 + [1] * 4, dtype=DT)
    kl_tau = counts @ (token_weight * per_token)  # KL(tau), L per attempt
    kl_obj = (weight * kl_tau).sum()
    if cfg.kl_estimator == "k1":  # + score-function term
        kl_obj = kl_obj + (weight * kl_tau.detach() * seq_logp).sum()
    (g_surr,) = torch.autograd.grad(surrogate, theta, retain_graph=True)
    if cfg.kl_weight == 0 or (cfg.mode == "exact" and torch.equal(theta.detach(), ref)):
        g_kl = torch.zeros(3, dtype=DT)  # a divergence's exact gradient at its minimum is 0
    else:  # (k1's terms cancel there only up to rounding)
        (g_kl,) = torch.autograd.grad(-cfg.kl_weight * kl_obj, theta)
    return {
        "surrogate_grad": g_surr.numpy(),
        "kl_grad": g_kl.numpy(),
        "reward_mean": float(weight @ reward),
        "kl": float(weight @ kl_tau.detach()),
        "attempts_mean": float(weight @ counts[:, :2].sum(1)),
    }


# ---------------------------------------------------------------- training and the result
_json = to_jsonable  # ds_core.store.jsonio's policy


@dataclass(frozen=True)
class ToyRun:
    """One toy run: its config and one read-only numpy column per recorded quantity, per step."""

    config: ToyConfig
    columns: Mapping[str, np.ndarray]

    def to_frame(self) -> pd.DataFrame:
        """One row per step (a fresh copy)."""
        return pd.DataFrame({k: np.array(v) for k, v in self.columns.items()})

    def summary(self) -> dict:
        """Figure-1 headline figures (nan where undefined).

        *_ratio_*: mean/median/min of the per-step ratio over the steps where it is finite (so KL
        excludes the reset steps); *_s_over_d: mean |g_s| / mean |(g_dC, g_dW)|; update_kept_s
        and update_kept_d: the share of the surrogate push that survives in the net update,
        sum |update| / (lr * sum |surrogate grad|), for theta_s and for the decision pair.
        """
        c, lr = self.columns, self.config.lr
        dnorm = lambda p: np.hypot(c[f"{p}_dC"], c[f"{p}_dW"])  # noqa: E731
        div = lambda a, b: float(a / b) if b else math.nan  # noqa: E731
        out = {}
        for kind, key in (("surrogate", "surrogate_grad"), ("kl", "kl_grad"), ("update", "update")):
            r = c[f"{kind}_ratio"][np.isfinite(c[f"{kind}_ratio"])]
            for stat, fn in (("mean", np.mean), ("median", np.median), ("min", np.min)):
                out[f"{kind}_ratio_{stat}"] = float(fn(r)) if r.size else math.nan
            out[f"{key}_s_over_d"] = div(np.abs(c[f"{key}_s"]).mean(), dnorm(key).mean())
        out["update_kept_s"] = div(np.abs(c["update_s"]).sum(), lr * np.abs(c["surrogate_grad_s"]).sum())
        out["update_kept_d"] = div(dnorm("update").sum(), lr * dnorm("surrogate_grad").sum())
        for k in ("p_s", "p_dC", "p_dW", "reward_mean"):
            out[f"first_{k}"], out[f"final_{k}"] = float(c[k][0]), float(c[k][-1])
        return out

    def to_dict(self) -> dict:
        """JSON-ready: config, summary and the per-step columns (nan/inf -> None)."""
        return {
            "config": asdict(self.config),
            "summary": {k: _json(v) for k, v in self.summary().items()},
            "steps": {k: [_json(x) for x in v.tolist()] for k, v in self.columns.items()},
        }


def run_toy(cfg: ToyConfig | None = None) -> ToyRun:
    """Train the three logits for cfg.steps steps, recording each step (before its update).

    Columns: step, reset (the reference was set to theta at this step), theta_*, ref_*, p_s, p_dC,
    p_dW, reward_mean (E[R] at theta), attempts_mean, kl (E[KL(tau)]), surrogate_grad_*, kl_grad_*
    (both in the ascent direction of J), update_* = lr * (surrogate_grad + kl_grad), and the
    ratios surrogate_ratio, kl_ratio, update_ratio (`attribution_ratio`); * in s, dC, dW.
    """
    cfg = cfg if cfg is not None else ToyConfig()
    gen = torch.Generator().manual_seed(cfg.seed)
    theta = np.array([cfg.init_s, cfg.init_dC, cfg.init_dW], dtype=np.float64)
    ref = theta.copy()
    rows = []
    for t in range(cfg.steps):
        reset = t % cfg.reset_period == 0
        if reset:
            ref = theta.copy()
        g = step_gradients(cfg, theta, ref, gen)
        update = cfg.lr * (g["surrogate_grad"] + g["kl_grad"])
        p = 1.0 / (1.0 + np.exp(-theta))
        row = {
            "step": t,
            "reset": reset,
            "p_s": p[0],
            "p_dC": p[1],
            "p_dW": p[2],
            "reward_mean": g["reward_mean"],
            "attempts_mean": g["attempts_mean"],
            "kl": g["kl"],
        }
        for i, name in enumerate(PARAMS):
            row[f"theta_{name}"], row[f"ref_{name}"] = theta[i], ref[i]
            row[f"surrogate_grad_{name}"] = g["surrogate_grad"][i]
            row[f"kl_grad_{name}"] = g["kl_grad"][i]
            row[f"update_{name}"] = update[i]
        row["surrogate_ratio"] = attribution_ratio(g["surrogate_grad"])
        row["kl_ratio"] = attribution_ratio(g["kl_grad"])
        row["update_ratio"] = attribution_ratio(update)
        rows.append(row)
        theta = theta + update
    columns = {}
    for k in rows[0]:
        columns[k] = np.array([r[k] for r in rows])
        columns[k].setflags(write=False)
    return ToyRun(cfg, MappingProxyType(columns))
