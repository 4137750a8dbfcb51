"""Gradient balance, dataset level: the ratio's distribution over a checkpoint's sampled episodes.

`dataset_balance(ckpt, sizes, n, ...)` samples (or reads) an evaluation run per size and attributes
every episode under every objective (ds_core.attribution.dataset.attribute_dataset): the ratio
|G_S|/|G_D| per episode, objective and outcome stratum, summarised per checkpoint
(`dataset_summary`). The whole result is also kept in the results store (kind "balance_dataset")
so the page can show it again without loading a model (`stored_dataset`).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from ds_core.analysis.balance.results import (
    VERSION,
    BalanceResult,
    Progress,
    attach_checkpoint,
    normalize_objectives,
    normalize_sizes,
    phase_progress,
    result_blob,
    result_from_blob,
    sampling_or_default,
    validate_n,
)
from ds_core.attribution.reference import default_ref_hash
from ds_core.objectives import DEFAULT_OBJECTIVES

DATASET_KIND = "balance_dataset"
DATASET_SIZES = ("3x3", "3x4", "3x6")
DATASET_N = 20


def dataset_key(
    model_hash: str, ref_hash: str | None, sizes, n: int, objectives, seed: int = 0, cfg=None, extra=None
) -> dict:
    """The results-store key of a dataset-level balance result. `extra`: the evaluation runs'
    RunKey.extra (an edited prompt, a GPU or half precision), which sample other episodes."""
    from ds_core.attribution.result import RESULT_VERSION

    return ({"extra": dict(extra)} if extra else {}) | {
        "version": VERSION,
        "attribution_version": RESULT_VERSION,
        "checkpoint": model_hash,
        "ref": ref_hash,
        "sizes": normalize_sizes(sizes),
        "n": int(n),
        "seed": int(seed),
        "sampling": sampling_or_default(cfg).key(),
        "objectives": list(normalize_objectives(objectives)),
        "advantage": {"correct": 1.0, "wrong": -1.0},
    }


def dataset_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """attribution_runs.summarize per checkpoint (a checkpoint column first)."""
    from ds_core.attribution.dataset import summarize

    parts = []
    for name in dict.fromkeys(frame["checkpoint"]) if len(frame) else []:
        with np.errstate(invalid="ignore"):  # quartiles of ratios that include inf (|G_D| = 0)
            s = summarize(frame[frame["checkpoint"] == name].reset_index(drop=True))
        s.insert(0, "checkpoint", name)
        parts.append(s)
    if not parts:
        s = summarize(frame.iloc[0:0]) if "objective" in frame else pd.DataFrame()
        s.insert(0, "checkpoint", pd.Series(dtype=str))
        return s
    return pd.concat(parts, ignore_index=True)


def dataset_balance(
    ckpt,
    sizes=DATASET_SIZES,
    n: int = DATASET_N,
    objectives=DEFAULT_OBJECTIVES,
    *,
    store=None,
    seed: int = 0,
    cfg=None,
    progress: Progress | None = None,
    recompute: bool = False,
    engine=None,
) -> BalanceResult:
    """Sample (or read from `store`) n episodes per size with `ckpt` and attribute each under each
    objective (attribute_dataset; KL against the checkpoint's parent, surrogate advantage +1 for a
    correct episode, -1 for a wrong one). Stored whole under dataset_key(...) when `store` is given.
    `progress(fraction, text)` is called during sampling (first 10%) and attribution. `engine`
    (ds_core.engine): sampling and attribution run there as work units (the same numbers)."""
    from ds_core.analysis.evaluate import evaluate
    from ds_core.attribution.dataset import attribute_dataset
    from ds_core.attribution.reference import resolve_ref
    from ds_core.episodes.tasks import TaskSpec

    sizes, n, objectives = normalize_sizes(sizes), validate_n(n, "n", 1000), normalize_objectives(objectives)
    cfg = sampling_or_default(cfg)
    t0 = time.perf_counter()
    ref, _ = resolve_ref(ckpt, None)
    if progress:
        progress(0.0, "sampling episodes")
    sample_cb = phase_progress(progress, 0.0, 0.1, "sampling episodes")
    if store is not None:
        runs = evaluate(
            ckpt,
            [TaskSpec.parse(s) for s in sizes],
            n=n,
            cfg=cfg,
            seed=seed,
            store=store,
            progress=sample_cb,
            engine=engine,
        )
        source = {s.spec: s.key for s in runs.sizes}
    else:
        source = _episodes_without_store(ckpt, sizes, n, cfg, seed)
    res = attribute_dataset(
        ckpt,
        source,
        objectives,
        store=store,
        ref=ref,
        recompute=recompute,
        progress=phase_progress(progress, 0.1, 1.0, "attributing (episode x objective)"),
        engine=engine,
    )
    frame = attach_checkpoint(res.frame, Path(str(ckpt.path)).name)
    settings = dataset_key(ckpt.hash, getattr(ref, "hash", None), sizes, n, objectives, seed, cfg, run_extra(ckpt))
    out = BalanceResult(
        "dataset",
        Path(str(ckpt.path)).name,
        ckpt.hash,
        getattr(ref, "hash", None),
        settings,
        frame,
        dataset_summary(frame),
        tuple(res.notes),
        "computed",
        res.n_computed,
        res.n_cached,
        time.perf_counter() - t0,
    )
    if store is not None:
        store.put_blob(DATASET_KIND, settings, result_blob(out))
    if progress:
        progress(1.0, "done")
    return out


def run_extra(ckpt) -> dict:
    """The RunKey.extra of the checkpoint's evaluation runs: its edited text format, its placement."""
    from ds_core.analysis.evaluate import format_key, placement_key

    return run_key_extra(format_key(ckpt.format), placement_key(ckpt.model))


def run_key_extra(fmt_key: dict | None = None, placement: dict | None = None) -> dict:
    return ({"format": fmt_key} if fmt_key else {}) | ({"placement": placement} if placement else {})


def _episodes_without_store(ckpt, sizes, n, cfg, seed):
    """{size: episodes} sampled without a store (the same problems and streams as evaluate)."""
    from ds_core.analysis.evaluate import episodes_without_store
    from ds_core.episodes.tasks import TaskSpec

    return {s: episodes_without_store(ckpt, TaskSpec.parse(s), n, cfg, seed) for s in sizes}


def stored_dataset(
    store,
    path,
    sizes=DATASET_SIZES,
    n: int = DATASET_N,
    objectives=DEFAULT_OBJECTIVES,
    seed: int = 0,
    cfg=None,
    extra=None,
) -> BalanceResult | None:
    """The dataset-level result for the checkpoint at `path` from the store, or None (no model is
    loaded: the key uses content hashes; `extra` as dataset_key's, e.g. run_key_extra(fmt_key))."""
    from ds_core.models.checkpoint import content_hash

    key = dataset_key(
        content_hash(path), default_ref_hash(path), sizes, validate_n(n, "n", 1000), objectives, seed, cfg, extra
    )
    blob = store.get_blob(DATASET_KIND, key)
    return None if blob is None else result_from_blob(blob, "store", dataset_summary)
