"""The Figure-1 toy (ds_core.analysis.toy) extended: a toy SFT gradient beside the surrogate and the KL,
and each objective's sampling:decision ratio against the attempt length L.

Design notes: docs/DESIGN.md, section `ds_core.analysis.toy_sweeps`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from ds_core.analysis.balance.results import BalanceError
from ds_core.analysis.toy import PARAMS, ToyConfig, attribution_ratio, run_toy, step_gradients

REFLECTION_DEMOS = (0.4, 0.4, 0.2)  # P(0, 1, 2 injected wrong attempts): ds_core.episodes.traces's recipe
SINGLE_DEMOS = (1.0,)  # SFT without reflection
TOY_OBJECTIVES = ("surrogate", "kl", "sft", "update")
TOY_LABELS = {
    "surrogate": "surrogate (GRPO)",
    "kl": "KL",
    "sft": "SFT (toy extension)",
    "update": "net update (surrogate + KL)",
}
DEFAULT_LENGTHS = (1, 2, 4, 8, 16, 32, 64)
SWEEP_MODES = ("same_states", "retrain")


def toy_sft_gradient(theta, attempt_length: int, demo_wrong: Sequence[float] = REFLECTION_DEMOS) -> np.ndarray:
    """The toy's SFT gradient (module docstring) at logits `theta` = (s, dC, dW): [3], ascent
    direction of the expected token-summed log-likelihood of the demonstrations."""
    w = np.asarray(demo_wrong, dtype=float)
    if w.ndim != 1 or not len(w) or (w < 0).any() or not math.isclose(w.sum(), 1.0, abs_tol=1e-9):
        raise BalanceError(
            f"demo_wrong must be probabilities of 0, 1, 2, ... wrong attempts summing to 1, got {tuple(demo_wrong)}"
        )
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
    table = pd.DataFrame(
        [{"figure": k, "value": s[k], "meaning": _SUMMARY_MEANING.get(k, "")} for k in order if k in s]
    )
    return ToyView(cfg, tuple(float(x) for x in demo_wrong), f, s, table)


def _stats(values) -> dict:
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if not len(v):
        return {"n": 0, "median": math.nan, "q1": math.nan, "q3": math.nan, "mean": math.nan}
    q1, med, q3 = np.quantile(v, [0.25, 0.5, 0.75])
    return {"n": int(len(v)), "median": float(med), "q1": float(q1), "q3": float(q3), "mean": float(v.mean())}


def toy_length_sweep(
    cfg: ToyConfig | None = None,
    lengths: Sequence[int] = DEFAULT_LENGTHS,
    *,
    mode: str = "same_states",
    demo_wrong: Sequence[float] = REFLECTION_DEMOS,
    max_states: int = 50,
) -> pd.DataFrame:
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
        states = [
            (
                int(f["step"].iloc[i]),
                np.array(f.loc[i, [f"theta_{p}" for p in PARAMS]], float),
                np.array(f.loc[i, [f"ref_{p}" for p in PARAMS]], float),
            )
            for i in idx
        ]
        import torch

        for L in lengths:
            c = replace(cfg, attempt_length=L)
            for step, theta, ref in states:
                gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
                g = step_gradients(c, theta, ref, gen)
                upd = cfg.lr * (g["surrogate_grad"] + g["kl_grad"])
                for name, vec in (
                    ("surrogate", g["surrogate_grad"]),
                    ("kl", g["kl_grad"]),
                    ("sft", toy_sft_gradient(theta, L, demo_wrong)),
                    ("update", upd),
                ):
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
            rows.append({"attempt_length": L, "objective": name, **st, "median_over_L": st["median"] / L, "mode": mode})
    return pd.DataFrame(rows)
