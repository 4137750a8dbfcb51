"""Gradient balance, real-model results: what the dataset-level view and the length sweep share.

`BalanceResult` (one run of ds_core.balance_dataset or ds_core.balance_sweep), the settings both
accept, normalised one way (sizes, objectives, n, sampling), the KL reference's hash found without
a model (`default_ref_hash`), and the JSON form of a result's frame (inf and nan kept) that the
results store and the shipped precompute (ds_core.balance) hold. `BalanceError` is the error of
every balance module, the toy's included.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import numpy as np
import pandas as pd

VERSION = 1
OBJECTIVE_LABELS = {"surrogate": "GRPO surrogate", "kl_k1": "KL (k1)", "kl_k3": "KL (k3)",
                    "sft_sum": "SFT (token sum)", "sft_mean": "SFT (seq. mean)", "dft": "DFT"}
DEFAULT_OBJECTIVES = ("surrogate", "kl_k3", "kl_k1", "sft_sum", "sft_mean", "dft")

Progress = Callable[[float, str], None]


class BalanceError(ValueError):
    """Input a balance module cannot turn into a trustworthy result (a bad setting, a missing file)."""


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


def _result_blob(r: BalanceResult) -> dict:
    return {"kind": r.kind, "checkpoint": r.checkpoint, "model_hash": r.model_hash,
            "ref_hash": r.ref_hash, "settings": r.settings, "frame": _frame_to_blob(r.frame),
            "notes": list(r.notes), "wall_s": r.wall_s}


def _result_from_blob(d: dict, source: str,
                      summarize: Callable[[pd.DataFrame], pd.DataFrame]) -> BalanceResult:
    """A BalanceResult from `_result_blob(...)`'s dict; `summarize(frame)` makes its summary
    (dataset_summary for a dataset result, loglog_slopes for a length sweep)."""
    try:
        frame = _with_logs(_frame_from_blob(d["frame"]))
        kind = d["kind"]
        summary = summarize(frame)
        return BalanceResult(kind, d["checkpoint"], d.get("model_hash"), d.get("ref_hash"),
                             dict(d.get("settings") or {}), frame, summary,
                             tuple(d.get("notes") or ()), source, 0, 0, d.get("wall_s"))
    except (KeyError, TypeError) as e:
        raise BalanceError(f"unreadable stored result ({type(e).__name__}: {e})") from None
