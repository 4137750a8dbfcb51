"""Gradient balance, real-model results: what the dataset-level view and the length sweep share.

`BalanceResult` (one run of ds_core.analysis.balance.dataset or ds_core.analysis.balance.length_sweep), the settings
both
accept, normalised one way (sizes, objectives, n, sampling), the KL reference's hash found without
a model (`default_ref_hash`), and the JSON form of a result's frame (inf and nan kept) that the
results store and the shipped precompute (ds_core.balance) hold. `BalanceError` is the error of
every balance module, the toy's included.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ds_core.errors import UserError
from ds_core.store.jsonio import to_jsonable

VERSION = 1

Progress = Callable[[float, str], None]


class BalanceError(UserError, ValueError):
    """Input a balance module cannot turn into a trustworthy result (a bad setting, a missing file)."""


def frame_to_blob(df: pd.DataFrame) -> dict:
    return {
        "columns": [str(c) for c in df.columns],
        "data": [[to_jsonable(v) for v in row] for row in df.astype(object).values.tolist()],
    }


def round_sig(x, digits: int = 6):
    if isinstance(x, float):
        return x if not math.isfinite(x) or x == 0 else float(f"{x:.{digits}g}")
    return x


def frame_from_blob(d: dict) -> pd.DataFrame:
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


_FLOAT_COLUMNS = {
    "advantage",
    "ratio_SD",
    "ratio_SD_per_token",
    "cos_SD",
    "share_D",
    "share_S",
    "share_O",
    "norm_G_S",
    "norm_G_D",
    "log10_ratio_SD",
    "log10_ratio_SD_per_token",
}
_INT_COLUMNS = {"episode", "n_attempts", "n_sampling", "n_decision", "n_other", "n_wrong"}


def with_logs(df: pd.DataFrame) -> pd.DataFrame:
    for c in ("ratio_SD", "ratio_SD_per_token"):
        v = pd.to_numeric(df[c], errors="coerce").astype(float).to_numpy()
        with np.errstate(divide="ignore", invalid="ignore"):
            out = np.where((v > 0) & np.isfinite(v), np.log10(np.where(v > 0, v, 1.0)), np.nan)
        df[f"log10_{c}"] = out
    return df


def normalize_sizes(sizes) -> list[str]:
    from ds_core.episodes.tasks import parse_sizes

    specs = parse_sizes(sizes) if isinstance(sizes, str) else [s for x in sizes for s in parse_sizes(str(x))]
    return list(dict.fromkeys(s.name for s in specs))


def normalize_objectives(objectives) -> tuple[str, ...]:
    from ds_core.objectives import parse_objectives

    try:
        return parse_objectives(objectives)
    except ValueError as e:
        raise BalanceError(str(e)) from None


def sampling_or_default(cfg):
    from ds_core.models.sampling import SamplingConfig

    return cfg if cfg is not None else SamplingConfig()


@dataclass(frozen=True)
class BalanceResult:
    """A real-model balance result. frame: one row per (episode, objective) with
    attribution_runs.FRAME_COLUMNS plus checkpoint, log10_ratio_SD, log10_ratio_SD_per_token
    (and n_wrong for a length sweep); summary: attribution_runs.summarize(frame) with a checkpoint
    column (dataset) or loglog_slopes(frame) (length sweep); source: "computed", "store" or
    "shipped"."""

    kind: str  # "dataset" or "length_sweep"
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


def validate_n(n, what: str, hi: int) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= hi:
        raise BalanceError(f"{what} must be an integer in 1..{hi}, got {n!r}")
    return int(n)


def attach_checkpoint(frame: pd.DataFrame, name: str, **extra) -> pd.DataFrame:
    frame = frame.copy()
    frame.insert(0, "checkpoint", name)
    for k, v in extra.items():
        frame[k] = v
    return with_logs(frame)


def phase_progress(progress: Progress | None, lo: float, hi: float, text: str):
    if progress is None:
        return None

    def cb(done: int, total: int):
        progress(lo + (hi - lo) * (done / total if total else 1.0), f"{text} {done}/{total}")

    return cb


def result_blob(r: BalanceResult) -> dict:
    return {
        "kind": r.kind,
        "checkpoint": r.checkpoint,
        "model_hash": r.model_hash,
        "ref_hash": r.ref_hash,
        "settings": r.settings,
        "frame": frame_to_blob(r.frame),
        "notes": list(r.notes),
        "wall_s": r.wall_s,
    }


def result_from_blob(d: dict, source: str, summarize: Callable[[pd.DataFrame], pd.DataFrame]) -> BalanceResult:
    """A BalanceResult from `result_blob(...)`'s dict; `summarize(frame)` makes its summary
    (dataset_summary for a dataset result, loglog_slopes for a length sweep)."""
    try:
        frame = with_logs(frame_from_blob(d["frame"]))
        kind = d["kind"]
        summary = summarize(frame)
        return BalanceResult(
            kind,
            d["checkpoint"],
            d.get("model_hash"),
            d.get("ref_hash"),
            dict(d.get("settings") or {}),
            frame,
            summary,
            tuple(d.get("notes") or ()),
            source,
            0,
            0,
            d.get("wall_s"),
        )
    except (KeyError, TypeError) as e:
        raise BalanceError(f"unreadable stored result ({type(e).__name__}: {e})") from None
