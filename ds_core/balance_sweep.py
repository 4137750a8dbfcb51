"""Gradient balance, real-model length sweep: the ratio against the attempt length at fixed decisions.

`model_length_sweep(ckpt, sizes, ...)` writes teacher-forced DS-format traces (`trace_episode`:
correct attempts, optionally after injected wrong ones) of increasing problem size, so the attempt
length grows from ~16 to ~530 tokens while the decision count stays fixed, attributes each, and
fits the log-log slope of ratio vs sampling-token count per objective (`loglog_slopes`). Stored
in the results store as kind "balance_length_sweep" (`stored_length_sweep` reads it back without
loading a model).

A finding the page must state (measured, not assumed): on ONE episode, the surrogate (every token
weighted by the same A), sft_sum and kl_k1 (whose per-token gradient is grad log p, the reference
being constant) have the same sampling:decision ratio, |sum_S grad log p| / |sum_D grad log p|,
whatever A is. Theorem 3.1's balance is a statement about the expectation over sampled
trajectories (the sampling tokens' score terms average out unless they correlate with A), which a
per-episode ratio cannot show; per episode the ratio measures gradient geometry.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pandas as pd

from .balance_results import (DEFAULT_OBJECTIVES, VERSION, BalanceError, BalanceResult, Progress,
                              _attach, _objectives, _phase, _result_blob, _result_from_blob, _sizes,
                              _validate_n, default_ref_hash)

SWEEP_KIND = "balance_length_sweep"
SWEEP_SIZES = ("1x1", "1x3", "2x3", "3x3", "3x4", "3x6", "3x9", "3x12", "6x12", "9x12")
SWEEP_PER_SIZE = 3
SWEEP_METRICS = ("ratio_SD", "ratio_SD_per_token", "norm_G_S", "norm_G_D")


def sweep_key(model_hash: str, ref_hash: str | None, sizes, per_size: int, n_wrong: int,
              objectives, seed: int = 0, advantage: float = 1.0) -> dict:
    """The results-store key of a length-sweep result."""
    from .attribution_result import RESULT_VERSION
    return {"version": VERSION, "attribution_version": RESULT_VERSION, "checkpoint": model_hash,
            "ref": ref_hash, "sizes": _sizes(sizes), "per_size": int(per_size),
            "n_wrong": int(n_wrong), "seed": int(seed), "objectives": list(_objectives(objectives)),
            "advantage": float(advantage)}


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
    return None if blob is None else _result_from_blob(blob, "store", loglog_slopes)
