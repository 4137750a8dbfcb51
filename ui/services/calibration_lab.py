"""The Calibration page's DS-lab section: every lab condition's committed evaluation (each seed's
eval.json, the fixed test sets 3x3..3x9, n = 100) as frames, seeds one by one or aggregated
(mean over seeds, the across-seed range). No model is loaded and nothing is sampled."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from ds_core.analysis.lab_report import FIGURES, collect
from ds_core.episodes.tasks import TEST_SET_SIZES
from ds_core.training.lab_index import LAB_DIR

FIGURE_LABELS = {"accuracy": "accuracy", "p_s": "p_s", "p_dC": "p_d|C", "p_dW": "p_d|W"}


def lab_frame(root: str | Path = LAB_DIR) -> pd.DataFrame:
    """One row per (condition, seed, size, figure): value (nan where undefined), k, n."""
    res = collect(Path(root), verify="none")
    rows = []
    for cond in res.runs:
        for run in res.seeds(cond):
            for size in TEST_SET_SIZES:
                if size not in run.counts:
                    continue
                for fig in FIGURES:
                    k, n = run.kn(fig, [size])
                    rows.append((cond, run.seed, size, fig, k / n if n else math.nan, k, n))
    return pd.DataFrame(rows, columns=["condition", "seed", "size", "figure", "value", "k", "n"])


def aggregate(frame: pd.DataFrame) -> pd.DataFrame:
    """Per (condition, size, figure): the mean over seeds where defined, the lowest and highest
    seed, and how many seeds have the figure defined."""
    cols = ["condition", "size", "figure", "mean", "lowest seed", "highest seed", "seeds"]
    if frame.empty:
        return pd.DataFrame(columns=cols)
    g = frame.dropna(subset=["value"]).groupby(["condition", "size", "figure"], sort=False)["value"]
    out = g.agg(["mean", "min", "max", "count"]).reset_index()
    return out.rename(columns={"min": "lowest seed", "max": "highest seed", "count": "seeds"})[cols]
