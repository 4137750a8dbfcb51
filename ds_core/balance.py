"""Gradient balance: the service behind the "Gradient balance" page (Figure 1 and beyond).

Three views of the paper's Gradient Attribution Property (PAPER.md), each a function that returns
DataFrames or frozen dataclasses (no Streamlit here):

1. The Figure-1 toy (ds_core.toy): `toy_view(cfg)` runs it and adds, per step, an SFT gradient
   (our extension, below) so the three objectives sit side by side; `toy_length_sweep(cfg, L...)`
   measures each objective's sampling:decision ratio against the attempt length L.
2. The real model, dataset level: `dataset_balance(ckpt, sizes, n, ...)` samples (or reads) an
   evaluation run per size and attributes every episode under every objective
   (ds_core.attribution_runs.attribute_dataset): the ratio |G_S|/|G_D| per episode, objective and
   outcome stratum. The whole result is also kept in the results store (kind "balance_dataset")
   so the page can show it again without loading a model (`stored_dataset`).
3. The real model, length sweep: `model_length_sweep(ckpt, sizes, ...)` writes teacher-forced
   DS-format traces (correct attempts, optionally after injected wrong ones) of increasing problem
   size, so the attempt length grows from ~16 to ~530 tokens while the decision count stays fixed,
   attributes each, and fits the log-log slope of ratio vs sampling-token count per objective
   (`loglog_slopes`). Stored as kind "balance_length_sweep".

Shipped precompute: `python -m ds_core.balance precompute` writes ds_core/data/balance_v1.json
(views 2 and 3 for the four shipped checkpoints, with their content hashes); `load_shipped()`
reads it back.

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

A finding the page must state (measured, not assumed): on ONE episode, the surrogate (every token
weighted by the same A), sft_sum and kl_k1 (whose per-token gradient is grad log p, the reference
being constant) have the same sampling:decision ratio, |sum_S grad log p| / |sum_D grad log p|,
whatever A is. Theorem 3.1's balance is a statement about the expectation over sampled
trajectories (the sampling tokens' score terms average out unless they correlate with A), which a
per-episode ratio cannot show; per episode the ratio measures gradient geometry.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from .toy import PARAMS, ToyConfig, attribution_ratio, run_toy, step_gradients

VERSION = 1
DATA_DIR = Path(__file__).resolve().parent / "data"
SHIPPED_FILE = DATA_DIR / "balance_v1.json"
DATASET_KIND = "balance_dataset"
SWEEP_KIND = "balance_length_sweep"

REFLECTION_DEMOS = (0.4, 0.4, 0.2)   # P(0, 1, 2 injected wrong attempts): ds_core.data's recipe
SINGLE_DEMOS = (1.0,)                 # SFT without reflection
TOY_OBJECTIVES = ("surrogate", "kl", "sft", "update")
TOY_LABELS = {"surrogate": "surrogate (GRPO)", "kl": "KL", "sft": "SFT (toy extension)",
              "update": "net update (surrogate + KL)"}
DEFAULT_LENGTHS = (1, 2, 4, 8, 16, 32, 64)
SWEEP_MODES = ("same_states", "retrain")

OBJECTIVE_LABELS = {"surrogate": "GRPO surrogate", "kl_k1": "KL (k1)", "kl_k3": "KL (k3)",
                    "sft_sum": "SFT (token sum)", "sft_mean": "SFT (seq. mean)", "dft": "DFT"}
DEFAULT_OBJECTIVES = ("surrogate", "kl_k3", "kl_k1", "sft_sum", "sft_mean", "dft")
DATASET_SIZES = ("3x3", "3x4", "3x6")
DATASET_N = 20
SWEEP_SIZES = ("1x1", "1x3", "2x3", "3x3", "3x4", "3x6", "3x9", "3x12", "6x12", "9x12")
SWEEP_PER_SIZE = 3
SHIPPED_CHECKPOINTS = ("base", "sft", "sft_reflection", "rl")

Progress = Callable[[float, str], None]


class BalanceError(ValueError):
    """Input this module cannot turn into a trustworthy result (a bad setting, a missing file)."""


# =============================================================================== the toy
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


# =============================================================================== real model
def _cell(x):
    """JSON-safe cell: nan -> None, +-inf -> "inf"/"-inf" (read back by pd.to_numeric), numpy
    scalars -> Python."""
    if x is None or x is pd.NA:
        return None
    if hasattr(x, "item") and not isinstance(x, (list, tuple)):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None if math.isnan(x) else ("inf" if x > 0 else "-inf")
    return x


def _frame_to_blob(df: pd.DataFrame) -> dict:
    return {"columns": [str(c) for c in df.columns],
            "data": [[_cell(v) for v in row] for row in df.astype(object).values.tolist()]}


def _round(x, digits: int = 6):
    if isinstance(x, float):
        return x if not math.isfinite(x) or x == 0 else float(f"{x:.{digits}g}")
    return x


def _frame_from_blob(d: dict) -> pd.DataFrame:
    try:
        df = pd.DataFrame(d["data"], columns=d["columns"])
    except (KeyError, TypeError, ValueError) as e:
        raise BalanceError(f"unreadable stored table ({type(e).__name__}: {e})") from None
    for c in df.columns:
        if c in _FLOAT_COLUMNS:
            df[c] = pd.to_numeric(df[c], errors="coerce").astype(float)
        elif c in _INT_COLUMNS:
            df[c] = pd.to_numeric(df[c], errors="coerce").astype("Int64")
        elif c in ("correct", "cached"):
            df[c] = df[c].astype(bool)
    return df


_FLOAT_COLUMNS = {"advantage", "ratio_SD", "ratio_SD_per_token", "cos_SD", "share_D", "share_S",
                  "share_O", "norm_G_S", "norm_G_D", "log10_ratio_SD", "log10_ratio_SD_per_token"}
_INT_COLUMNS = {"episode", "n_attempts", "n_sampling", "n_decision", "n_other", "n_wrong"}


def _with_logs(df: pd.DataFrame) -> pd.DataFrame:
    for c in ("ratio_SD", "ratio_SD_per_token"):
        v = pd.to_numeric(df[c], errors="coerce").astype(float).to_numpy()
        with np.errstate(divide="ignore", invalid="ignore"):
            out = np.where((v > 0) & np.isfinite(v), np.log10(np.where(v > 0, v, 1.0)), np.nan)
        df[f"log10_{c}"] = out
    return df


def _checkpoint_stub(path) -> SimpleNamespace:
    from .checkpoint import read_card
    p = Path(path).expanduser()
    try:
        card = read_card(p)
    except Exception:  # noqa: BLE001 - an unreadable card just means "no parent"
        card = None
    return SimpleNamespace(card=card, path=p)


def default_ref_hash(path) -> str | None:
    """The content hash of the KL reference attribute_dataset would use by default for the
    checkpoint at `path` (its card's parent, when that checkpoint sits in the same folder), or
    None; without loading any model."""
    from .attribution_runs import parent_checkpoint
    from .checkpoint import content_hash
    d = parent_checkpoint(_checkpoint_stub(path))
    return content_hash(d) if d is not None else None


def _sizes(sizes) -> list[str]:
    from .tasks import parse_sizes
    specs = parse_sizes(sizes) if isinstance(sizes, str) else [
        s for x in sizes for s in parse_sizes(str(x))]
    return list(dict.fromkeys(s.name for s in specs))


def _objectives(objectives) -> tuple[str, ...]:
    from .attribution_runs import parse_objectives
    try:
        return parse_objectives(objectives)
    except ValueError as e:
        raise BalanceError(str(e)) from None


def _sampling(cfg):
    from .rollout import SamplingConfig
    return cfg if cfg is not None else SamplingConfig()


def dataset_key(model_hash: str, ref_hash: str | None, sizes, n: int, objectives, seed: int = 0,
                cfg=None) -> dict:
    """The results-store key of a dataset-level balance result."""
    from .attribution_result import RESULT_VERSION
    return {"version": VERSION, "attribution_version": RESULT_VERSION, "checkpoint": model_hash,
            "ref": ref_hash, "sizes": _sizes(sizes), "n": int(n), "seed": int(seed),
            "sampling": _sampling(cfg).key(), "objectives": list(_objectives(objectives)),
            "advantage": {"correct": 1.0, "wrong": -1.0}}


def sweep_key(model_hash: str, ref_hash: str | None, sizes, per_size: int, n_wrong: int,
              objectives, seed: int = 0, advantage: float = 1.0) -> dict:
    """The results-store key of a length-sweep result."""
    from .attribution_result import RESULT_VERSION
    return {"version": VERSION, "attribution_version": RESULT_VERSION, "checkpoint": model_hash,
            "ref": ref_hash, "sizes": _sizes(sizes), "per_size": int(per_size),
            "n_wrong": int(n_wrong), "seed": int(seed), "objectives": list(_objectives(objectives)),
            "advantage": float(advantage)}


@dataclass(frozen=True)
class BalanceResult:
    """A real-model balance result. frame: one row per (episode, objective) with
    attribution_runs.FRAME_COLUMNS plus checkpoint, log10_ratio_SD, log10_ratio_SD_per_token
    (and n_wrong for a length sweep); summary: attribution_runs.summarize(frame) with a checkpoint
    column (dataset) or loglog_slopes(frame) (length sweep); source: "computed", "store" or
    "shipped"."""
    kind: str                      # "dataset" or "length_sweep"
    checkpoint: str
    model_hash: str | None
    ref_hash: str | None
    settings: dict
    frame: pd.DataFrame
    summary: pd.DataFrame
    notes: tuple[str, ...] = ()
    source: str = "computed"
    n_computed: int = 0
    n_cached: int = 0
    wall_s: float | None = None


def _validate_n(n, what: str, hi: int) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= hi:
        raise BalanceError(f"{what} must be an integer in 1..{hi}, got {n!r}")
    return int(n)


def dataset_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """attribution_runs.summarize per checkpoint (a checkpoint column first)."""
    from .attribution_runs import summarize
    parts = []
    for name in dict.fromkeys(frame["checkpoint"]) if len(frame) else []:
        with np.errstate(invalid="ignore"):   # quartiles of ratios that include inf (|G_D| = 0)
            s = summarize(frame[frame["checkpoint"] == name].reset_index(drop=True))
        s.insert(0, "checkpoint", name)
        parts.append(s)
    if not parts:
        s = summarize(frame.iloc[0:0]) if "objective" in frame else pd.DataFrame()
        s.insert(0, "checkpoint", pd.Series(dtype=str))
        return s
    return pd.concat(parts, ignore_index=True)


def _attach(frame: pd.DataFrame, name: str, **extra) -> pd.DataFrame:
    frame = frame.copy()
    frame.insert(0, "checkpoint", name)
    for k, v in extra.items():
        frame[k] = v
    return _with_logs(frame)


def _phase(progress: Progress | None, lo: float, hi: float, text: str):
    if progress is None:
        return None

    def cb(done: int, total: int):
        progress(lo + (hi - lo) * (done / total if total else 1.0), f"{text} {done}/{total}")
    return cb


def dataset_balance(ckpt, sizes=DATASET_SIZES, n: int = DATASET_N, objectives=DEFAULT_OBJECTIVES,
                    *, store=None, seed: int = 0, cfg=None, progress: Progress | None = None,
                    recompute: bool = False) -> BalanceResult:
    """Sample (or read from `store`) n episodes per size with `ckpt` and attribute each under each
    objective (attribute_dataset; KL against the checkpoint's parent, surrogate advantage +1 for a
    correct episode, -1 for a wrong one). Stored whole under dataset_key(...) when `store` is given.
    `progress(fraction, text)` is called during sampling (first 10%) and attribution."""
    from .attribution_runs import attribute_dataset, resolve_ref
    from .evaluate import evaluate
    from .tasks import TaskSpec
    sizes, n, objectives = _sizes(sizes), _validate_n(n, "n", 1000), _objectives(objectives)
    cfg = _sampling(cfg)
    t0 = time.perf_counter()
    ref, _ = resolve_ref(ckpt, None)
    if progress:
        progress(0.0, "sampling episodes")
    sample_cb = _phase(progress, 0.0, 0.1, "sampling episodes")
    if store is not None:
        runs = evaluate(ckpt, [TaskSpec.parse(s) for s in sizes], n=n, cfg=cfg, seed=seed,
                        store=store, progress=sample_cb)
        source = {s.spec: s.key for s in runs.sizes}
    else:
        source = _episodes_without_store(ckpt, sizes, n, cfg, seed)
    res = attribute_dataset(ckpt, source, objectives, store=store, ref=ref, recompute=recompute,
                            progress=_phase(progress, 0.1, 1.0, "attributing (episode x objective)"))
    frame = _attach(res.frame, Path(str(ckpt.path)).name)
    settings = dataset_key(ckpt.hash, getattr(ref, "hash", None), sizes, n, objectives, seed, cfg)
    out = BalanceResult("dataset", Path(str(ckpt.path)).name, ckpt.hash, getattr(ref, "hash", None),
                        settings, frame, dataset_summary(frame), tuple(res.notes), "computed",
                        res.n_computed, res.n_cached, time.perf_counter() - t0)
    if store is not None:
        store.put_blob(DATASET_KIND, settings, _result_blob(out))
    if progress:
        progress(1.0, "done")
    return out


def _episodes_without_store(ckpt, sizes, n, cfg, seed):
    """{size: episodes} sampled without a store (the same problems and streams as evaluate)."""
    from .evaluate import problems_for
    from .rollout import rollout
    from .tasks import TaskSpec
    out = {}
    for s in sizes:
        task, problems = problems_for(TaskSpec.parse(s), n, seed)
        out[s] = rollout(ckpt.model, ckpt.tokenizer, ckpt.format, problems, cfg, seed=seed,
                         streams=[f"{task}:{i}" for i in range(len(problems))])
    return out


def _result_blob(r: BalanceResult) -> dict:
    return {"kind": r.kind, "checkpoint": r.checkpoint, "model_hash": r.model_hash,
            "ref_hash": r.ref_hash, "settings": r.settings, "frame": _frame_to_blob(r.frame),
            "notes": list(r.notes), "wall_s": r.wall_s}


def _result_from_blob(d: dict, source: str) -> BalanceResult:
    try:
        frame = _with_logs(_frame_from_blob(d["frame"]))
        kind = d["kind"]
        summary = dataset_summary(frame) if kind == "dataset" else loglog_slopes(frame)
        return BalanceResult(kind, d["checkpoint"], d.get("model_hash"), d.get("ref_hash"),
                             dict(d.get("settings") or {}), frame, summary,
                             tuple(d.get("notes") or ()), source, 0, 0, d.get("wall_s"))
    except (KeyError, TypeError) as e:
        raise BalanceError(f"unreadable stored result ({type(e).__name__}: {e})") from None


def stored_dataset(store, path, sizes=DATASET_SIZES, n: int = DATASET_N,
                   objectives=DEFAULT_OBJECTIVES, seed: int = 0, cfg=None) -> BalanceResult | None:
    """The dataset-level result for the checkpoint at `path` from the store, or None (no model is
    loaded: the key uses content hashes)."""
    from .checkpoint import content_hash
    key = dataset_key(content_hash(path), default_ref_hash(path), sizes,
                      _validate_n(n, "n", 1000), objectives, seed, cfg)
    blob = store.get_blob(DATASET_KIND, key)
    return None if blob is None else _result_from_blob(blob, "store")


# ----------------------------------------------------------------------------- length sweep
def trace_episode(problem, tokenizer, n_wrong: int = 0, seed: int = 0):
    """A teacher-forced DS-format episode of `problem`: `n_wrong` injected wrong attempts
    (ds_core.data.wrong_attempt), each followed by [RESAMPLE], then the correct attempt, [STOP],
    <eos>. Roles from the format's tagger, as for a sampled episode."""
    import random

    from .data import wrong_attempt
    from .formats import DSFormat
    from .rollout import prompt_prefix
    fmt = DSFormat()
    rng = random.Random(f"balance:{problem.a}{problem.op}{problem.b}:{seed}")
    attempts = [wrong_attempt(fmt, problem, rng) for _ in range(int(n_wrong))] + [
        fmt.attempt_text(problem)]
    ids = tokenizer(fmt.trace_text(problem, attempts), add_special_tokens=False)["input_ids"]
    return fmt.parse(problem, ids, prompt_prefix(fmt, tokenizer, problem).prompt_len, tokenizer)


def sweep_episodes(tokenizer, sizes=SWEEP_SIZES, per_size: int = SWEEP_PER_SIZE, n_wrong: int = 0,
                   seed: int = 0) -> dict[str, list]:
    """{size: teacher-forced episodes} for the length sweep (`per_size` seeded problems each)."""
    from .tasks import sample_problems
    sizes = _sizes(sizes)
    per_size = _validate_n(per_size, "per_size", 100)
    if isinstance(n_wrong, bool) or not isinstance(n_wrong, (int, np.integer)) or not 0 <= n_wrong <= 3:
        raise BalanceError(f"n_wrong must be an integer in 0..3, got {n_wrong!r}")
    return {s: [trace_episode(p, tokenizer, n_wrong, seed) for p in sample_problems(s, per_size, seed)]
            for s in sizes}


SWEEP_METRICS = ("ratio_SD", "ratio_SD_per_token", "norm_G_S", "norm_G_D")


def loglog_slopes(frame: pd.DataFrame, x: str = "n_sampling", ys=SWEEP_METRICS) -> pd.DataFrame:
    """Per (checkpoint, objective): least-squares slope of log10(y) on log10(x) over the rows with
    finite positive values (y = c * x^slope), with its intercept, r2 and n, plus the median ratio
    at the shortest and the longest trace and their quotient (growth)."""
    rows = []
    keys = [k for k in ("checkpoint", "objective") if k in frame]
    if not len(frame) or not keys:
        return pd.DataFrame(columns=keys + ["metric", "slope", "intercept", "r2", "n", "x_min",
                                            "x_max", "median_at_min", "median_at_max", "growth"])
    for gkey, g in frame.groupby(keys, sort=False):
        gkey = gkey if isinstance(gkey, tuple) else (gkey,)
        for y in ys:
            xv = pd.to_numeric(g[x], errors="coerce").to_numpy(float)
            yv = pd.to_numeric(g[y], errors="coerce").to_numpy(float)
            ok = np.isfinite(xv) & np.isfinite(yv) & (xv > 0) & (yv > 0)
            row = dict(zip(keys, gkey), metric=y, n=int(ok.sum()))
            if ok.sum() >= 2 and np.ptp(xv[ok]) > 0:
                lx, ly = np.log10(xv[ok]), np.log10(yv[ok])
                slope, icpt = np.polyfit(lx, ly, 1)
                pred = slope * lx + icpt
                ss = ((ly - ly.mean()) ** 2).sum()
                r2 = 1 - ((ly - pred) ** 2).sum() / ss if ss > 0 else math.nan
                lo, hi = xv[ok].min(), xv[ok].max()
                m_lo = float(np.median(yv[ok][xv[ok] == lo]))
                m_hi = float(np.median(yv[ok][xv[ok] == hi]))
                row.update(slope=float(slope), intercept=float(icpt), r2=float(r2), x_min=float(lo),
                           x_max=float(hi), median_at_min=m_lo, median_at_max=m_hi,
                           growth=m_hi / m_lo)
            else:
                row.update(slope=math.nan, intercept=math.nan, r2=math.nan, x_min=math.nan,
                           x_max=math.nan, median_at_min=math.nan, median_at_max=math.nan,
                           growth=math.nan)
            rows.append(row)
    return pd.DataFrame(rows)


def model_length_sweep(ckpt, sizes=SWEEP_SIZES, per_size: int = SWEEP_PER_SIZE, n_wrong: int = 0,
                       objectives=DEFAULT_OBJECTIVES, *, store=None, seed: int = 0,
                       advantage: float = 1.0, progress: Progress | None = None,
                       recompute: bool = False) -> BalanceResult:
    """Attribute teacher-forced traces of growing size (sweep_episodes) under each objective.
    The traces are correct, so the surrogate's advantage is `advantage` (+1) for all (the ratio
    does not depend on it). KL against the checkpoint's parent. Stored whole under sweep_key(...)
    when `store` is given. Needs a checkpoint with DS-Lens' format (decision tokens)."""
    from .attribution_runs import attribute_dataset, resolve_ref
    from .formats import DSFormat
    if not isinstance(getattr(ckpt, "format", None), DSFormat):
        raise BalanceError(f"the length sweep writes DS-format traces; {Path(str(ckpt.path)).name} "
                           "has no [STOP]/[RESAMPLE] tokens (it uses the text format)")
    if not math.isfinite(float(advantage)) or float(advantage) == 0:
        raise BalanceError(f"advantage must be a finite non-zero number, got {advantage!r}")
    objectives = _objectives(objectives)
    t0 = time.perf_counter()
    eps = sweep_episodes(ckpt.tokenizer, sizes, per_size, n_wrong, seed)
    ref, _ = resolve_ref(ckpt, None)
    if progress:
        progress(0.0, "attributing traces")
    res = attribute_dataset(ckpt, eps, objectives, store=store, ref=ref, advantage=float(advantage),
                            recompute=recompute,
                            progress=_phase(progress, 0.0, 1.0, "attributing (trace x objective)"))
    name = Path(str(ckpt.path)).name
    frame = _attach(res.frame, name, n_wrong=int(n_wrong))
    settings = sweep_key(ckpt.hash, getattr(ref, "hash", None), list(eps), per_size, n_wrong,
                         objectives, seed, advantage)
    out = BalanceResult("length_sweep", name, ckpt.hash, getattr(ref, "hash", None), settings, frame,
                        loglog_slopes(frame), tuple(res.notes), "computed", res.n_computed,
                        res.n_cached, time.perf_counter() - t0)
    if store is not None:
        store.put_blob(SWEEP_KIND, settings, _result_blob(out))
    if progress:
        progress(1.0, "done")
    return out


def stored_length_sweep(store, path, sizes=SWEEP_SIZES, per_size: int = SWEEP_PER_SIZE,
                        n_wrong: int = 0, objectives=DEFAULT_OBJECTIVES, seed: int = 0,
                        advantage: float = 1.0) -> BalanceResult | None:
    """The length sweep of the checkpoint at `path` from the store, or None (no model loaded)."""
    from .checkpoint import content_hash
    key = sweep_key(content_hash(path), default_ref_hash(path), sizes, per_size, n_wrong,
                    objectives, seed, advantage)
    blob = store.get_blob(SWEEP_KIND, key)
    return None if blob is None else _result_from_blob(blob, "store")


# =============================================================================== shipped precompute
@dataclass(frozen=True)
class Shipped:
    """The shipped precompute. dataset/sweep: the frames of all checkpoints; *_summary: their
    summaries; meta: how it was made (command, settings, code version, time, checkpoint hashes);
    path: the file."""
    path: str
    meta: dict
    dataset: pd.DataFrame
    dataset_summary: pd.DataFrame
    sweep: pd.DataFrame
    sweep_slopes: pd.DataFrame
    notes: dict = field(default_factory=dict)

    def stale(self, hashes: dict[str, str]) -> list[str]:
        """Names of checkpoints whose current content hash differs from the one shipped."""
        shipped = self.meta.get("checkpoints", {})
        return [n for n, h in hashes.items() if n in shipped and shipped[n].get("hash") != h]


def precompute(out: str | Path = SHIPPED_FILE, checkpoints_dir: str | Path | None = None,
               names: Sequence[str] = SHIPPED_CHECKPOINTS, *, dataset_sizes=DATASET_SIZES,
               n: int = DATASET_N, sweep_sizes=SWEEP_SIZES, per_size: int = SWEEP_PER_SIZE,
               objectives=DEFAULT_OBJECTIVES, store=None, seed: int = 0,
               progress: Progress | None = None) -> Path:
    """Compute the dataset-level result and the length sweep for each named checkpoint and write
    them to `out` (JSON, floats to 6 significant digits). Every attribution is also cached in
    `store` when given. Returns the path written."""
    from .checkpoint import SHIPPED_DIR, code_version, load_checkpoint
    root = Path(checkpoints_dir) if checkpoints_dir is not None else SHIPPED_DIR
    t0 = time.perf_counter()
    ds_frames, sw_frames, notes, ckpts = [], [], {}, {}
    counts = {"computed": 0, "from_cache": 0}
    for i, name in enumerate(names):
        ck = load_checkpoint(root / name)
        ckpts[name] = {"hash": ck.hash, "parent": ck.card.parent if ck.card else None}
        span = 1.0 / len(names)

        def sub(lo, hi, text, i=i, name=name):
            if progress is None:
                return None
            return lambda f, t: progress((i + lo + (hi - lo) * f) * span, f"{name}: {t}")
        d = dataset_balance(ck, dataset_sizes, n, objectives, store=store, seed=seed,
                            progress=sub(0.0, 0.5, "dataset"))
        s = model_length_sweep(ck, sweep_sizes, per_size, 0, objectives, store=store, seed=seed,
                               progress=sub(0.5, 1.0, "length sweep"))
        for r in (d, s):
            counts["computed"] += r.n_computed
            counts["from_cache"] += r.n_cached
        ds_frames.append(d.frame)
        sw_frames.append(s.frame)
        notes[name] = {"dataset": list(d.notes), "length_sweep": list(s.notes)}
    # "cached" says where a row came from in this run, not a property of the result
    ds = pd.concat(ds_frames, ignore_index=True).drop(columns="cached")
    sw = pd.concat(sw_frames, ignore_index=True).drop(columns="cached")
    meta = {"version": VERSION,
            "command": "python -m ds_core.balance precompute " + " ".join(
                [f"--names {','.join(names)}", f"--sizes {','.join(_sizes(dataset_sizes))}",
                 f"--n {n}", f"--sweep-sizes {','.join(_sizes(sweep_sizes))}",
                 f"--per-size {per_size}", f"--seed {seed}"]),
            "code_version": code_version(),
            "created": time.strftime("%Y-%m-%d %H:%M:%S"), "wall_s": round(time.perf_counter() - t0, 1),
            "attributions": counts,
            "checkpoints": ckpts,
            "dataset": {"sizes": _sizes(dataset_sizes), "n": n, "seed": seed,
                        "objectives": list(_objectives(objectives)),
                        "advantage": "+1 correct / -1 wrong", "sampling": _sampling(None).key()},
            "length_sweep": {"sizes": _sizes(sweep_sizes), "per_size": per_size, "n_wrong": 0,
                             "seed": seed, "objectives": list(_objectives(objectives)),
                             "advantage": 1.0}}

    def blob(df):
        b = _frame_to_blob(df)
        b["data"] = [[_round(v) for v in row] for row in b["data"]]
        return b
    doc = {"meta": meta, "dataset": blob(ds), "length_sweep": blob(sw), "notes": notes}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(json.dumps(doc, separators=(",", ":"), allow_nan=False) + "\n")
    tmp.replace(out)
    return out


def load_shipped(path: str | Path = SHIPPED_FILE) -> Shipped:
    """Read the shipped precompute; BalanceError with a clear message when missing or unreadable."""
    p = Path(path)
    if not p.is_file():
        raise BalanceError(f"no shipped precompute at {p}; create it with "
                           "`python -m ds_core.balance precompute`")
    try:
        doc = json.loads(p.read_text())
        meta = doc["meta"]
        if meta.get("version") != VERSION:
            raise BalanceError(f"{p} has version {meta.get('version')!r}, this code reads {VERSION}; "
                               "recreate it with `python -m ds_core.balance precompute`")
        ds = _with_logs(_frame_from_blob(doc["dataset"]))
        sw = _with_logs(_frame_from_blob(doc["length_sweep"]))
    except BalanceError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise BalanceError(f"cannot read {p} ({type(e).__name__}: {e})") from None
    return Shipped(str(p), meta, ds, dataset_summary(ds), sw, loglog_slopes(sw),
                   dict(doc.get("notes") or {}))


# =============================================================================== command line
def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m ds_core.balance",
                                description="Gradient balance: precompute the shipped results")
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("precompute", help="dataset-level attribution and the length sweep of the "
                       "shipped checkpoints, written to ds_core/data/balance_v1.json")
    a.add_argument("--out", default=str(SHIPPED_FILE))
    a.add_argument("--checkpoints", default=None, help="folder of checkpoints (default: checkpoints/)")
    a.add_argument("--names", default=",".join(SHIPPED_CHECKPOINTS))
    a.add_argument("--sizes", default=",".join(DATASET_SIZES), help="dataset-level sizes")
    a.add_argument("--n", type=int, default=DATASET_N, help="episodes per size (dataset level)")
    a.add_argument("--sweep-sizes", default=",".join(SWEEP_SIZES))
    a.add_argument("--per-size", type=int, default=SWEEP_PER_SIZE)
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--data-dir", default=None, help="results store (default $DS_LENS_DATA or ./data)")
    a.add_argument("--no-store", action="store_true")
    a.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    from .attribution_engine import AttributionError
    from .checkpoint import CheckpointError
    from .rollout import RolloutError
    from .store import ResultsStore, StoreError
    from .tasks import TaskError
    try:
        import torch
        if args.threads:
            torch.set_num_threads(args.threads)
        store = None if args.no_store else ResultsStore(args.data_dir)
        last = [-1.0]

        def progress(f, text):
            if f - last[0] >= 0.01 or f >= 1.0:
                last[0] = f
                print(f"{100 * f:5.1f}%  {text}", file=sys.stderr, flush=True)
        out = precompute(args.out, args.checkpoints, [n for n in args.names.split(",") if n],
                         dataset_sizes=args.sizes, n=args.n, sweep_sizes=args.sweep_sizes,
                         per_size=args.per_size, store=store, seed=args.seed, progress=progress)
        print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB)")
        return 0
    except (BalanceError, CheckpointError, RolloutError, StoreError, TaskError, AttributionError,
            OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
