"""Gradient balance, shipped precompute: `python -m ds_core.balance precompute` and the file it writes.

The command runs both real-model views (ds_core.balance_dataset and ds_core.balance_sweep) for the
four shipped checkpoints and writes ds_core/data/balance_v1.json, with their content hashes so the
page can tell when a checkpoint changed; `load_shipped()` reads it back (`Shipped`).

The Gradient balance page's service (three views of the paper's Gradient Attribution Property,
PAPER.md; no Streamlit; bad input raises ds_core.balance_results.BalanceError) is split by view:
- ds_core.balance_toy      the Figure-1 toy with a toy SFT, and its ratio vs attempt length L;
- ds_core.balance_sweep    real model: ratio vs sampling-token count on teacher-forced traces;
- ds_core.balance_dataset  real model: ratio distributions over sampled episodes;
- ds_core.balance_results  what the two real-model views share (settings, BalanceResult, JSON form);
- ds_core.balance          (this module) the shipped precompute of the two real-model views.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import pandas as pd

from .balance_dataset import DATASET_N, DATASET_SIZES, dataset_balance, dataset_summary
from .balance_results import (DEFAULT_OBJECTIVES, VERSION, BalanceError, Progress, _frame_from_blob,
                              _frame_to_blob, _objectives, _round, _sampling, _sizes, _with_logs)
from .balance_sweep import SWEEP_PER_SIZE, SWEEP_SIZES, loglog_slopes, model_length_sweep

DATA_DIR = Path(__file__).resolve().parent / "data"
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
