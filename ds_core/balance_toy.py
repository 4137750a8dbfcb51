"""Gradient balance, the toy: the paper's Figure-1 toy (ds_core.toy) as the page shows it.

`TOY_CONTROLS` describes the page's controls (one per ToyConfig field); `toy_view(cfg)` runs the
toy and adds, per step, an SFT gradient (our extension, below) so the three objectives sit side by
side; `toy_length_sweep(cfg, L...)` measures each objective's sampling:decision ratio against the
attempt length L. Results are DataFrames or frozen dataclasses (no Streamlit here); bad settings
raise BalanceError.

The toy's SFT (our extension; the paper argues SFT's imbalance in its appendix but the toy of
Figure 1 has only the surrogate and the KL). SFT maximises the token-summed log-likelihood of
demonstration trajectories. A demonstration, as DS-Lens' reflection data (ds_core.data): k wrong
attempts, each followed by RESAMPLE, then a correct attempt and STOP, k = 0, 1, 2 with
probabilities `demo_wrong` (default 0.4/0.4/0.2; `(1.0,)` is SFT without reflection: one correct
attempt and STOP). Each attempt is L sampling tokens whose correctness is the attempt's (the same
token model as the toy's KL term), so with E_C = 1 correct and E_W = E[k] wrong attempts:

    g_s  = L * (E_C (1 - p_s) - E_W p_s)      g_dC = 1 - p_dC      g_dW = E_W (1 - p_dW)

(the ascent direction of the log-likelihood, exact). Its ratio |g_s| / |(g_dC, g_dW)| is exactly
linear in L at any fixed theta, like the k3 KL's, while the surrogate's does not depend on L.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np
import pandas as pd

from .balance_results import BalanceError
from .toy import PARAMS, ToyConfig, attribution_ratio, run_toy, step_gradients

REFLECTION_DEMOS = (0.4, 0.4, 0.2)   # P(0, 1, 2 injected wrong attempts): ds_core.data's recipe
SINGLE_DEMOS = (1.0,)                 # SFT without reflection
TOY_OBJECTIVES = ("surrogate", "kl", "sft", "update")
TOY_LABELS = {"surrogate": "surrogate (GRPO)", "kl": "KL", "sft": "SFT (toy extension)",
              "update": "net update (surrogate + KL)"}
DEFAULT_LENGTHS = (1, 2, 4, 8, 16, 32, 64)
SWEEP_MODES = ("same_states", "retrain")


@dataclass(frozen=True)
class Control:
    """One ToyConfig field as a page control: a slider (int/float), or a select (choice)."""
    name: str
    label: str
    kind: str                      # "int", "float", "choice"
    lo: float | None = None
    hi: float | None = None
    step: float | None = None
    options: tuple[str, ...] = ()
    help: str = ""


TOY_CONTROLS = (
    Control("kl_weight", "KL weight w", "float", 0.0, 2.0, 0.05,
            help="J = surrogate - w * KL; 0 switches the KL off"),
    Control("attempt_length", "attempt length L (tokens)", "int", 1, 64, 1,
            help="sampling tokens per attempt; decisions are 1 token"),
    Control("lr", "learning rate", "float", 0.01, 1.0, 0.01, help="plain gradient ascent step"),
    Control("reset_period", "reference reset period", "int", 1, 200, 1,
            help="the KL reference is set to the current logits every this many steps"),
    Control("steps", "training steps", "int", 10, 1000, 10),
    Control("group_size", "GRPO group size G", "int", 2, 64, 1),
    Control("max_attempts", "retry cap M", "int", 1, 16, 1,
            help="after attempt M the episode ends without a decision token"),
    Control("init_s", "initial theta_s", "float", -4.0, 4.0, 0.1, help="p_s = sigmoid(theta_s)"),
    Control("init_dC", "initial theta_dC", "float", -4.0, 4.0, 0.1,
            help="p_dC = P(STOP | correct) = sigmoid(theta_dC)"),
    Control("init_dW", "initial theta_dW", "float", -4.0, 4.0, 0.1,
            help="p_dW = P(RESAMPLE | wrong) = sigmoid(theta_dW)"),
    Control("kl_estimator", "KL estimator", "choice", options=("k3", "k1"),
            help="k3: verl's low_var_kl loss (the paper's experiment); k1: log pi/pi_ref in the return"),
    Control("mode", "expectation", "choice", options=("exact", "sample"),
            help="exact: enumerate every trajectory; sample: Monte-Carlo groups"),
    Control("batch", "groups per step (sample mode)", "int", 1, 256, 1),
    Control("seed", "seed (sample mode)", "int", 0, 10_000, 1),
)


def toy_sft_gradient(theta, attempt_length: int, demo_wrong: Sequence[float] = REFLECTION_DEMOS
                     ) -> np.ndarray:
    """The toy's SFT gradient (module docstring) at logits `theta` = (s, dC, dW): [3], ascent
    direction of the expected token-summed log-likelihood of the demonstrations."""
    w = np.asarray(demo_wrong, dtype=float)
    if w.ndim != 1 or not len(w) or (w < 0).any() or not math.isclose(w.sum(), 1.0, abs_tol=1e-9):
        raise BalanceError(f"demo_wrong must be probabilities of 0, 1, 2, ... wrong attempts "
                           f"summing to 1, got {tuple(demo_wrong)}")
    if int(attempt_length) < 1:
        raise BalanceError(f"attempt_length must be >= 1, got {attempt_length}")
    e_w = float((np.arange(len(w)) * w).sum())
    p = 1.0 / (1.0 + np.exp(-np.asarray(theta, dtype=float)))
    return np.array([attempt_length * ((1.0 - p[0]) - e_w * p[0]), 1.0 - p[1], e_w * (1.0 - p[2])])


@dataclass(frozen=True)
class ToyView:
    """A toy run for the page. frame: ToyRun.to_frame() plus sft_grad_{s,dC,dW} and sft_ratio
    (the toy's SFT at each step's logits); summary: ToyRun.summary() plus sft_ratio_median and
    sft_ratio_mean; table: the summary as (figure, value, meaning) rows."""
    config: ToyConfig
    demo_wrong: tuple[float, ...]
    frame: pd.DataFrame
    summary: dict
    table: pd.DataFrame


_SUMMARY_MEANING = {
    "surrogate_ratio_median": "median over steps of |g_s|/|g_d|, surrogate (paper: about 1:1)",
    "kl_ratio_median": "median over non-reset steps of |g_s|/|g_d|, KL (paper: above 2:1)",
    "sft_ratio_median": "median over steps of |g_s|/|g_d|, toy SFT (our extension)",
    "update_ratio_median": "median over steps of |u_s|/|u_d|, net update",
    "kl_grad_s_over_d": "mean |KL grad on theta_s| / mean |KL grad on (theta_dC, theta_dW)|",
    "surrogate_grad_s_over_d": "the same for the surrogate",
    "update_kept_s": "share of the surrogate's push on theta_s left in the net update",
    "update_kept_d": "share of the surrogate's push on the decision logits left in the net update",
}


def toy_view(cfg: ToyConfig | None = None, demo_wrong: Sequence[float] = REFLECTION_DEMOS) -> ToyView:
    cfg = cfg if cfg is not None else ToyConfig()
    run = run_toy(cfg)
    f = run.to_frame()
    thetas = f[[f"theta_{p}" for p in PARAMS]].to_numpy()
    sft = np.array([toy_sft_gradient(t, cfg.attempt_length, demo_wrong) for t in thetas])
    for i, p in enumerate(PARAMS):
        f[f"sft_grad_{p}"] = sft[:, i]
    f["sft_ratio"] = [attribution_ratio(g) for g in sft]
    s = dict(run.summary())
    r = f["sft_ratio"][np.isfinite(f["sft_ratio"])]
    s["sft_ratio_median"] = float(r.median()) if len(r) else math.nan
    s["sft_ratio_mean"] = float(r.mean()) if len(r) else math.nan
    order = list(_SUMMARY_MEANING) + [k for k in s if k not in _SUMMARY_MEANING]
    table = pd.DataFrame([{"figure": k, "value": s[k], "meaning": _SUMMARY_MEANING.get(k, "")}
                          for k in order if k in s])
    return ToyView(cfg, tuple(float(x) for x in demo_wrong), f, s, table)


def _stats(values) -> dict:
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if not len(v):
        return {"n": 0, "median": math.nan, "q1": math.nan, "q3": math.nan, "mean": math.nan}
    q1, med, q3 = np.quantile(v, [0.25, 0.5, 0.75])
    return {"n": int(len(v)), "median": float(med), "q1": float(q1), "q3": float(q3),
            "mean": float(v.mean())}


def toy_length_sweep(cfg: ToyConfig | None = None, lengths: Sequence[int] = DEFAULT_LENGTHS, *,
                     mode: str = "same_states", demo_wrong: Sequence[float] = REFLECTION_DEMOS,
                     max_states: int = 50) -> pd.DataFrame:
    """Sampling:decision ratio of each toy objective against the attempt length L.

    mode "same_states": run the toy once with `cfg`, then at (up to `max_states`, evenly spaced)
    recorded states (theta, ref) evaluate every objective's gradient with attempt_length = L for
    each L: only L changes, so this isolates the length effect (Theorem 3.2: the k3 KL's ratio is
    exactly L times its L = 1 value, the surrogate's does not move). mode "retrain": train the toy
    afresh for each L (the states then differ too). Ratios: per state, |g_s| / |(g_dC, g_dW)|.
    Returns one row per (attempt_length, objective): n (finite ratios), median, q1, q3, mean,
    median_over_L (median / L), mode.
    """
    cfg = cfg if cfg is not None else ToyConfig()
    if mode not in SWEEP_MODES:
        raise BalanceError(f"mode must be one of {SWEEP_MODES}, got {mode!r}")
    try:
        lengths = sorted({int(x) for x in lengths})
    except (TypeError, ValueError):
        raise BalanceError(f"lengths must be integers, got {lengths!r}") from None
    if not lengths or lengths[0] < 1 or lengths[-1] > 4096:
        raise BalanceError(f"lengths must be integers in 1..4096, got {lengths}")
    ratios: dict[tuple[int, str], list[float]] = {}
    if mode == "same_states":
        f = run_toy(cfg).to_frame()
        idx = np.unique(np.linspace(0, len(f) - 1, min(max_states, len(f))).round().astype(int))
        states = [(int(f["step"].iloc[i]), np.array(f.loc[i, [f"theta_{p}" for p in PARAMS]], float),
                   np.array(f.loc[i, [f"ref_{p}" for p in PARAMS]], float)) for i in idx]
        import torch
        for L in lengths:
            c = replace(cfg, attempt_length=L)
            for step, theta, ref in states:
                gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
                g = step_gradients(c, theta, ref, gen)
                upd = cfg.lr * (g["surrogate_grad"] + g["kl_grad"])
                for name, vec in (("surrogate", g["surrogate_grad"]), ("kl", g["kl_grad"]),
                                  ("sft", toy_sft_gradient(theta, L, demo_wrong)), ("update", upd)):
                    ratios.setdefault((L, name), []).append(attribution_ratio(vec))
    else:
        for L in lengths:
            v = toy_view(replace(cfg, attempt_length=L), demo_wrong).frame
            for name in TOY_OBJECTIVES:
                ratios[(L, name)] = v[f"{name}_ratio"].tolist()
    rows = []
    for L in lengths:
        for name in TOY_OBJECTIVES:
            st = _stats(ratios[(L, name)])
            rows.append({"attempt_length": L, "objective": name, **st,
                         "median_over_L": st["median"] / L, "mode": mode})
    return pd.DataFrame(rows)
