"""Gradient balance, real-model length sweep: the ratio against the attempt length at fixed decisions.

Design notes: docs/DESIGN.md, section `ds_core.analysis.balance.length_sweep`.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ds_core.analysis.balance.results import (
    VERSION,
    BalanceError,
    BalanceResult,
    Progress,
    attach_checkpoint,
    normalize_objectives,
    normalize_sizes,
    phase_progress,
    result_blob,
    result_from_blob,
    validate_n,
)
from ds_core.attribution.reference import default_ref_hash
from ds_core.episodes.traces import trace_episode
from ds_core.objectives import DEFAULT_OBJECTIVES

SWEEP_KIND = "balance_length_sweep"
SWEEP_SIZES = ("1x1", "1x3", "2x3", "3x3", "3x4", "3x6", "3x9", "3x12", "6x12", "9x12")
SWEEP_PER_SIZE = 3
SWEEP_METRICS = ("ratio_SD", "ratio_SD_per_token", "norm_G_S", "norm_G_D")


def sweep_key(
    model_hash: str,
    ref_hash: str | None,
    sizes,
    per_size: int,
    n_wrong: int,
    objectives,
    seed: int = 0,
    advantage: float = 1.0,
) -> dict:
    """The results-store key of a length-sweep result."""
    from ds_core.attribution.result import RESULT_VERSION

    return {
        "version": VERSION,
        "attribution_version": RESULT_VERSION,
        "checkpoint": model_hash,
        "ref": ref_hash,
        "sizes": normalize_sizes(sizes),
        "per_size": int(per_size),
        "n_wrong": int(n_wrong),
        "seed": int(seed),
        "objectives": list(normalize_objectives(objectives)),
        "advantage": float(advantage),
    }


def sweep_episodes(
    tokenizer, sizes=SWEEP_SIZES, per_size: int = SWEEP_PER_SIZE, n_wrong: int = 0, seed: int = 0
) -> dict[str, list]:
    """{size: teacher-forced episodes} for the length sweep (`per_size` seeded problems each)."""
    from ds_core.episodes.tasks import sample_problems

    sizes = normalize_sizes(sizes)
    per_size = validate_n(per_size, "per_size", 100)
    if isinstance(n_wrong, bool) or not isinstance(n_wrong, (int, np.integer)) or not 0 <= n_wrong <= 3:
        raise BalanceError(f"n_wrong must be an integer in 0..3, got {n_wrong!r}")
    return {s: [trace_episode(p, tokenizer, n_wrong, seed) for p in sample_problems(s, per_size, seed)] for s in sizes}


def loglog_slopes(frame: pd.DataFrame, x: str = "n_sampling", ys=SWEEP_METRICS) -> pd.DataFrame:
    """Per (checkpoint, objective): least-squares slope of log10(y) on log10(x) over the rows with
    finite positive values (y = c * x^slope), with its intercept, r2 and n, plus the median ratio
    at the shortest and the longest trace and their quotient (growth)."""
    rows = []
    keys = [k for k in ("checkpoint", "objective") if k in frame]
    if not len(frame) or not keys:
        return pd.DataFrame(
            columns=keys
            + ["metric", "slope", "intercept", "r2", "n", "x_min", "x_max", "median_at_min", "median_at_max", "growth"]
        )
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
                row.update(
                    slope=float(slope),
                    intercept=float(icpt),
                    r2=float(r2),
                    x_min=float(lo),
                    x_max=float(hi),
                    median_at_min=m_lo,
                    median_at_max=m_hi,
                    growth=m_hi / m_lo,
                )
            else:
                row.update(
                    slope=math.nan,
                    intercept=math.nan,
                    r2=math.nan,
                    x_min=math.nan,
                    x_max=math.nan,
                    median_at_min=math.nan,
                    median_at_max=math.nan,
                    growth=math.nan,
                )
            rows.append(row)
    return pd.DataFrame(rows)


def model_length_sweep(
    ckpt,
    sizes=SWEEP_SIZES,
    per_size: int = SWEEP_PER_SIZE,
    n_wrong: int = 0,
    objectives=DEFAULT_OBJECTIVES,
    *,
    store=None,
    seed: int = 0,
    advantage: float = 1.0,
    progress: Progress | None = None,
    recompute: bool = False,
    engine=None,
) -> BalanceResult:
    """Attribute teacher-forced traces of growing size (sweep_episodes) under each objective.
    The traces are correct, so the surrogate's advantage is `advantage` (+1) for all (the ratio
    does not depend on it). KL against the checkpoint's parent. Stored whole under sweep_key(...)
    when `store` is given. Needs a checkpoint with DS-Lens' format (decision tokens). `engine`
    (ds_core.engine): the attributions run there as work units (the same figures)."""
    from ds_core.attribution.dataset import attribute_dataset
    from ds_core.attribution.reference import resolve_ref

    if not getattr(getattr(ckpt, "format", None), "writes_traces", False):
        raise BalanceError(
            f"the length sweep writes DS-format traces; {Path(str(ckpt.path)).name} "
            "has no [STOP]/[RESAMPLE] tokens (it uses the text format)"
        )
    if not math.isfinite(float(advantage)) or float(advantage) == 0:
        raise BalanceError(f"advantage must be a finite non-zero number, got {advantage!r}")
    objectives = normalize_objectives(objectives)
    t0 = time.perf_counter()
    eps = sweep_episodes(ckpt.tokenizer, sizes, per_size, n_wrong, seed)
    ref, _ = resolve_ref(ckpt, None)
    if progress:
        progress(0.0, "attributing traces")
    res = attribute_dataset(
        ckpt,
        eps,
        objectives,
        store=store,
        ref=ref,
        advantage=float(advantage),
        recompute=recompute,
        progress=phase_progress(progress, 0.0, 1.0, "attributing (trace x objective)"),
        engine=engine,
    )
    name = Path(str(ckpt.path)).name
    frame = attach_checkpoint(res.frame, name, n_wrong=int(n_wrong))
    settings = sweep_key(
        ckpt.hash, getattr(ref, "hash", None), list(eps), per_size, n_wrong, objectives, seed, advantage
    )
    out = BalanceResult(
        "length_sweep",
        name,
        ckpt.hash,
        getattr(ref, "hash", None),
        settings,
        frame,
        loglog_slopes(frame),
        tuple(res.notes),
        "computed",
        res.n_computed,
        res.n_cached,
        time.perf_counter() - t0,
    )
    if store is not None:
        store.put_blob(SWEEP_KIND, settings, result_blob(out))
    if progress:
        progress(1.0, "done")
    return out


def stored_length_sweep(
    store,
    path,
    sizes=SWEEP_SIZES,
    per_size: int = SWEEP_PER_SIZE,
    n_wrong: int = 0,
    objectives=DEFAULT_OBJECTIVES,
    seed: int = 0,
    advantage: float = 1.0,
) -> BalanceResult | None:
    """The length sweep of the checkpoint at `path` from the store, or None (no model loaded)."""
    from ds_core.models.checkpoint import content_hash

    key = sweep_key(content_hash(path), default_ref_hash(path), sizes, per_size, n_wrong, objectives, seed, advantage)
    blob = store.get_blob(SWEEP_KIND, key)
    return None if blob is None else result_from_blob(blob, "store", loglog_slopes)
