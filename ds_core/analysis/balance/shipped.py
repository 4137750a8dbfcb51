"""Gradient balance, shipped precompute: `python -m ds_core balance precompute` and the file it writes.

The command runs both real-model views (ds_core.analysis.balance.dataset and ds_core.analysis.balance.length_sweep)
for the
four shipped checkpoints and writes ds_core/data/balance_v1.json, with their content hashes so the
page can tell when a checkpoint changed; `load_shipped()` reads it back (`Shipped`).

The Gradient balance page's service (three views of the paper's Gradient Attribution Property,
PAPER.md; no Streamlit; bad input raises ds_core.analysis.balance.results.BalanceError) is split by view:
- ds_core.analysis.toy_sweeps      the Figure-1 toy with a toy SFT, and its ratio vs attempt length L;
- ds_core.analysis.balance.length_sweep    real model: ratio vs sampling-token count on teacher-forced traces;
- ds_core.analysis.balance.dataset  real model: ratio distributions over sampled episodes;
- ds_core.analysis.balance.results  what the two real-model views share (settings, BalanceResult, JSON form);
- ds_core.balance          (this module) the shipped precompute of the two real-model views.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ds_core.analysis.balance.dataset import DATASET_N, DATASET_SIZES, dataset_balance, dataset_summary
from ds_core.analysis.balance.length_sweep import SWEEP_PER_SIZE, SWEEP_SIZES, loglog_slopes, model_length_sweep
from ds_core.analysis.balance.results import (
    VERSION,
    BalanceError,
    Progress,
    frame_from_blob,
    frame_to_blob,
    normalize_objectives,
    normalize_sizes,
    round_sig,
    sampling_or_default,
    with_logs,
)
from ds_core.objectives import DEFAULT_OBJECTIVES
from ds_core.paths import PACKAGE_DATA
from ds_core.store import jsonread

DATA_DIR = PACKAGE_DATA
SHIPPED_FILE = DATA_DIR / "balance_v1.json"
SHIPPED_CHECKPOINTS = ("base", "sft", "sft_reflection", "rl")


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


def precompute(
    out: str | Path = SHIPPED_FILE,
    checkpoints_dir: str | Path | None = None,
    names: Sequence[str] = SHIPPED_CHECKPOINTS,
    *,
    dataset_sizes=DATASET_SIZES,
    n: int = DATASET_N,
    sweep_sizes=SWEEP_SIZES,
    per_size: int = SWEEP_PER_SIZE,
    objectives=DEFAULT_OBJECTIVES,
    store=None,
    seed: int = 0,
    progress: Progress | None = None,
    engine=None,
) -> Path:
    """Compute the dataset-level result and the length sweep for each named checkpoint and write
    them to `out` (JSON, floats to 6 significant digits). Every attribution is also cached in
    `store` when given. `engine` (ds_core.engine): sampling and attribution run there as work
    units (the same numbers). Returns the path written."""
    from ds_core.models.checkpoint import code_version, load_checkpoint
    from ds_core.paths import SHIPPED_DIR

    root = Path(checkpoints_dir) if checkpoints_dir is not None else SHIPPED_DIR
    t0 = time.perf_counter()
    ds_frames, sw_frames, notes, ckpts = [], [], {}, {}
    counts = {"computed": 0, "from_cache": 0}
    for i, name in enumerate(names):
        ck = load_checkpoint(root / name)
        ckpts[name] = {"hash": ck.hash, "parent": ck.card.parent if ck.card else None}
        span = 1.0 / len(names)

        def sub(lo, hi, text, i=i, name=name, span=span):
            if progress is None:
                return None
            return lambda f, t: progress((i + lo + (hi - lo) * f) * span, f"{name}: {t}")

        d = dataset_balance(
            ck, dataset_sizes, n, objectives, store=store, seed=seed, progress=sub(0.0, 0.5, "dataset"), engine=engine
        )
        s = model_length_sweep(
            ck,
            sweep_sizes,
            per_size,
            0,
            objectives,
            store=store,
            seed=seed,
            progress=sub(0.5, 1.0, "length sweep"),
            engine=engine,
        )
        for r in (d, s):
            counts["computed"] += r.n_computed
            counts["from_cache"] += r.n_cached
        ds_frames.append(d.frame)
        sw_frames.append(s.frame)
        notes[name] = {"dataset": list(d.notes), "length_sweep": list(s.notes)}
    # "cached" says where a row came from in this run, not a property of the result
    ds = pd.concat(ds_frames, ignore_index=True).drop(columns="cached")
    sw = pd.concat(sw_frames, ignore_index=True).drop(columns="cached")
    meta = {
        "version": VERSION,
        "command": "python -m ds_core balance precompute "
        + " ".join(
            [
                f"--names {','.join(names)}",
                f"--sizes {','.join(normalize_sizes(dataset_sizes))}",
                f"--n {n}",
                f"--sweep-sizes {','.join(normalize_sizes(sweep_sizes))}",
                f"--per-size {per_size}",
                f"--seed {seed}",
            ]
        ),
        "code_version": code_version(),
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "wall_s": round(time.perf_counter() - t0, 1),
        "attributions": counts,
        "checkpoints": ckpts,
        "dataset": {
            "sizes": normalize_sizes(dataset_sizes),
            "n": n,
            "seed": seed,
            "objectives": list(normalize_objectives(objectives)),
            "advantage": "+1 correct / -1 wrong",
            "sampling": sampling_or_default(None).key(),
        },
        "length_sweep": {
            "sizes": normalize_sizes(sweep_sizes),
            "per_size": per_size,
            "n_wrong": 0,
            "seed": seed,
            "objectives": list(normalize_objectives(objectives)),
            "advantage": 1.0,
        },
    }

    def blob(df):
        b = frame_to_blob(df)
        b["data"] = [[round_sig(v) for v in row] for row in b["data"]]
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
        raise BalanceError(f"no shipped precompute at {p}; create it with `python -m ds_core balance precompute`")
    try:
        doc = jsonread.read(p, expect=dict)
        meta = doc["meta"]
        if meta.get("version") != VERSION:
            raise BalanceError(
                f"{p} has version {meta.get('version')!r}, this code reads {VERSION}; "
                "recreate it with `python -m ds_core balance precompute`"
            )
        ds = with_logs(frame_from_blob(doc["dataset"]))
        sw = with_logs(frame_from_blob(doc["length_sweep"]))
    except BalanceError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise BalanceError(f"cannot read {p} ({type(e).__name__}: {e})") from None
    return Shipped(str(p), meta, ds, dataset_summary(ds), sw, loglog_slopes(sw), dict(doc.get("notes") or {}))
