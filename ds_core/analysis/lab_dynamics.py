"""The DS lab's training dynamics: held-out p_s, p_d|C, p_d|W and the applied gradient's split
over training steps, per condition and seed, read from the runs' train_log.json (no model
loaded). The Training dynamics page draws what this returns."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ds_core.store import jsonread
from ds_core.training.lab_index import CONDITION_ORDER, LAB_DIR, lab_runs

METRICS = {  # log column -> label
    "eval_p_s": "p_s (3x3/3x4)",
    "eval_p_dC": "p_d|C (3x3/3x4)",
    "eval_p_dW": "p_d|W (3x3/3x4)",
    "eval_acc": "accuracy (3x3/3x4)",
    "eval_ood_p_s": "p_s (3x5..3x9)",
    "eval_ood_p_dC": "p_d|C (3x5..3x9)",
    "eval_ood_p_dW": "p_d|W (3x5..3x9)",
    "eval_ood_acc": "accuracy (3x5..3x9)",
    "split_ratio_SD": "|G_S| / |G_D| of the applied gradient",
    "split_cos_SD": "cos(G_S, G_D) of the applied gradient",
    "split_share_D": "decision tokens' share of the applied gradient",
    "split_norm_G_S": "|G_S| (sampling tokens)",
    "split_norm_G_D": "|G_D| (decision tokens)",
}
LOG_SCALE = ("split_ratio_SD", "split_norm_G_S", "split_norm_G_D")
HELDOUT = tuple(k for k in METRICS if k.startswith("eval_"))
SPLIT = tuple(k for k in METRICS if k.startswith("split_"))


@dataclass(frozen=True)
class Dynamics:
    """`runs`: one row per (condition, seed, step, metric) with its value; `bands`: per
    (condition, step, metric) the mean, min and max over seeds and the seed count; `algorithm`
    per condition ("sft" or "grpo": their steps are not on one scale)."""

    runs: pd.DataFrame
    bands: pd.DataFrame
    algorithm: dict
    skipped: tuple[str, ...] = ()


def read_logs(root: Path = LAB_DIR) -> Dynamics:
    """Every lab run's log under `root`; a run whose log or card cannot be read is skipped and named."""
    rows, skipped, algorithm = [], [], {}
    for run in lab_runs(root):
        cond, seed, p = run.condition, run.seed, run.path / "train_log.json"
        if not p.is_file():
            continue
        try:
            log = jsonread.read(p, expect=list)
            card = jsonread.read(run.path / "card.json", expect=dict)
        except (jsonread.JSONReadError, OSError) as e:
            skipped.append(f"{cond}/seed{seed}: {e}")
            continue
        algorithm[cond] = str((card.get("training") or {}).get("algorithm", "sft"))
        for r in log:
            if not isinstance(r, dict) or "step" not in r:
                continue
            for k in METRICS:
                v = r.get(k)
                if isinstance(v, (int, float)) and math.isfinite(float(v)):
                    rows.append((cond, seed, int(r["step"]), k, float(v)))
    runs = pd.DataFrame(rows, columns=["condition", "seed", "step", "metric", "value"])
    runs = runs.drop_duplicates(["condition", "seed", "step", "metric"], keep="last")
    if runs.empty:
        bands = pd.DataFrame(columns=["condition", "step", "metric", "mean", "min", "max", "seeds"])
    else:
        g = runs.groupby(["condition", "step", "metric"])["value"]
        bands = g.agg(["mean", "min", "max", "count"]).rename(columns={"count": "seeds"}).reset_index()
    return Dynamics(runs, bands, algorithm, tuple(skipped))


def conditions_of(dyn: Dynamics, algorithm: str) -> list[str]:
    return [c for c in CONDITION_ORDER if dyn.algorithm.get(c) == algorithm]
