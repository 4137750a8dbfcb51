"""Decision regret on the Calibration page: per (checkpoint, size) the regret summary of
ds_core.analysis.regret, from the results store (a `python -m ds_core decisions` run of this
checkpoint's evaluation run), else from the shipped documents (ds_core/data/decisions_v1.json) when
they were computed on this checkpoint's content with these settings, else missing with the command
that computes it. Loads no model."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from ds_core.analysis import regret as rg
from ds_core.analysis.decisions import DEFAULT_N
from ds_core.episodes.tasks import TaskSpec
from ds_core.store import StoreError
from ui.services.calibration import SAMPLING_DEFAULTS, CheckpointRef, Settings, run_key_for

PARTS = ("own", "optimal", "regret", "wrong_kept", "correct_revised")
COLUMNS = (
    "checkpoint",
    "size",
    "source",
    "episodes",
    *(c for p in PARTS for c in (p, f"{p}_lo", f"{p}_hi")),
    "n_wrong_kept",
    "n_correct_revised",
    "cannot_succeed",
)


def _shipped_summary(doc: dict, ref: CheckpointRef, size: str, settings: Settings, n: int) -> dict | None:
    """The shipped document's row for `size` when it answers this exact request."""
    from ds_core.models.device import current_placement

    if doc.get("checkpoint_hash") != ref.hash or ref.fmt_key or current_placement():
        return None
    if doc.get("n") != settings.n or doc.get("seed") != settings.seed or doc.get("continuations") != n:
        return None
    sampling = {**SAMPLING_DEFAULTS, **(doc.get("sampling") or {})}
    if any(sampling.get(k) != v for k, v in settings.sampling_key().items()):
        return None
    return next((r for r in doc.get("summary", ()) if r.get("size") == size), None)


def regret_grid(
    refs: Sequence[CheckpointRef], sizes: Sequence[TaskSpec], settings: Settings, store, n: int = DEFAULT_N
) -> tuple[pd.DataFrame, list[str]]:
    """(one row per (checkpoint, size): COLUMNS, source 'store' | 'shipped' | 'missing'; notes)."""
    shipped = rg.shipped_documents()
    rows, notes = [], []
    for ref in refs:
        doc = shipped.get(ref.label) or next(
            (d for d in shipped.values() if d.get("checkpoint_hash") == ref.hash), None
        )
        for spec in sizes:
            digest = run_key_for(ref.hash, spec, settings, ref.fmt_key).digest()
            key = {"version": rg.VERSION, "run": digest, "n": n, "seed": settings.seed}
            hit = None
            if store is not None:
                try:
                    hit = store.get_blob(rg.KIND, key)
                except StoreError as e:
                    notes.append(f"results store unreadable, serving the shipped values only: {e}")
                    store = None
            row = {"checkpoint": ref.label, "size": spec.name}
            if hit is not None and isinstance(hit.get("summary"), dict):
                rows.append({**hit["summary"], **row, "source": "store"})
                continue
            summary = _shipped_summary(doc, ref, spec.name, settings, n) if doc else None
            if summary is not None:
                rows.append({**summary, **row, "source": "shipped"})
                continue
            rows.append({**row, "source": "missing"})
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    for c in COLUMNS[3:]:
        frame[c] = pd.to_numeric(frame[c], errors="coerce")
    return frame, list(dict.fromkeys(notes))


def regret_command(ref: CheckpointRef, sizes: Sequence[str], settings: Settings, n: int = DEFAULT_N) -> str:
    """The command that computes and stores a checkpoint's missing regret cells."""
    extra = "".join(
        f" --{k.replace('_', '-')} {v}"
        for k, v in settings.sampling_key().items()
        if v is not None and SAMPLING_DEFAULTS.get(k) != v
    )
    return (
        f"python -m ds_core decisions --checkpoint {ref.path} --sizes {','.join(sizes)} --n {settings.n} "
        f"--continuations {n} --seed {settings.seed}{extra}"
    )


def percent_regret(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame for the screen: % with one decimal and 'lo–hi' intervals."""
    out = frame[["checkpoint", "size", "source", "episodes"]].copy()
    for p in PARTS:
        v, lo, hi = (frame[c] * 100 for c in (p, f"{p}_lo", f"{p}_hi"))
        out[p.replace("_", " ")] = ["" if pd.isna(a) else f"{a:.1f} ({b:.1f}–{c:.1f})" for a, b, c in zip(v, lo, hi)]
    out["kept wrong / revised correct"] = [
        "" if pd.isna(a) else f"{int(a)} / {int(b)}" for a, b in zip(frame["n_wrong_kept"], frame["n_correct_revised"])
    ]
    out["no save %"] = (frame["cannot_succeed"] * 100).round(1)
    return out
