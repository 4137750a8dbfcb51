"""Calibration, views: the frames the calibration page shows, built from a grid's frame
(ui.services.calibration.gather(...).frame, one row per (checkpoint, size)) and the paper's Table 1.

    table1_frame(grid.frame, ["rl"])      # Table 1 as text cells, with the paper's rows
    paper_frame(["rl"])                   # the paper's accuracies with their Wald intervals
    calibration_long(grid.frame)          # p_s, p_d|C, p_d|W long form, for the charts
    predicted_observed(grid.frame)        # predicted vs observed accuracy per cell
    percent_view(grid.frame)              # probabilities as %, for display

Cells with no numbers (source 'missing') are blank in table1_frame and left out of
calibration_long and predicted_observed. Nothing here loads a model or imports torch.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import pandas as pd

from ds_core.analysis.metrics import wald_interval
from ds_core.paper import LABELS, TABLE1
from ds_core.paper import SIZES as PAPER_SIZES
from ds_core.paper import N as PAPER_N
from ui.services.calibration import QUANTITIES

QUANTITY_LABELS = {"p_s": "p_s", "p_dC": "p_d|C", "p_dW": "p_d|W", "predicted": "predicted", "observed": "observed"}


def paper_frame(conditions: Iterable[str], sizes: Sequence[str] = PAPER_SIZES) -> pd.DataFrame:
    """The paper's Table 1 (Qwen2.5-7B, n = 100) for `conditions` and the sizes it has, long form,
    with the Wald interval its counts give. Labels read 'paper: RL'."""
    rows = []
    for c in conditions:
        if c not in TABLE1:
            continue
        for s in sizes:
            if s not in PAPER_SIZES:
                continue
            k = TABLE1[c][PAPER_SIZES.index(s)]
            lo, hi = wald_interval(k, PAPER_N)
            rows.append(
                {
                    "condition": c,
                    "label": f"paper: {LABELS[c]}",
                    "size": s,
                    "accuracy": k / PAPER_N,
                    "wald_lo": lo,
                    "wald_hi": hi,
                    "n": PAPER_N,
                }
            )
    return pd.DataFrame(rows, columns=["condition", "label", "size", "accuracy", "wald_lo", "wald_hi", "n"])


def _pct(x) -> str:
    return "–" if x is None or pd.isna(x) else f"{100 * float(x):.0f}"


def table1_frame(
    frame: pd.DataFrame,
    paper_conditions: Iterable[str] = (),
    interval: str = "wald",
    sizes: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Table 1 as text cells: one row per checkpoint ('93 (88–98)', accuracy % with the chosen
    95% interval, blank when missing) and one per paper condition ('paper: RL', plain %)."""
    if interval not in ("wald", "wilson"):
        raise ValueError(f"interval must be 'wald' or 'wilson', got {interval!r}")
    sizes = list(sizes if sizes is not None else dict.fromkeys(frame["size"]))
    rows = []
    for label, g in frame.groupby("checkpoint", sort=False):
        row = {"row": label, "source": ", ".join(sorted(set(g["source"])))}
        by = g.set_index("size")
        for s in sizes:
            if s not in by.index or by.at[s, "source"] == "missing":
                row[s] = ""
            else:
                r = by.loc[s]
                row[s] = f"{_pct(r['accuracy'])} ({_pct(r[f'{interval}_lo'])}–{_pct(r[f'{interval}_hi'])})"
        rows.append(row)
    paper = paper_frame(paper_conditions, sizes)
    for label, g in paper.groupby("label", sort=False):
        by = g.set_index("size")
        rows.append(
            {
                "row": label,
                "source": "paper (Qwen2.5-7B)",
                **{s: (_pct(by.at[s, "accuracy"]) if s in by.index else "") for s in sizes},
            }
        )
    return pd.DataFrame(rows, columns=["row", *sizes, "source"])


def calibration_long(frame: pd.DataFrame, quantities: Sequence[str] = ("p_s", "p_dC", "p_dW")) -> pd.DataFrame:
    """One row per (checkpoint, size, quantity) with value and bootstrap (lo, hi); missing cells
    are left out, undefined values (no attempts of that kind) stay as nan."""
    have = frame[frame["source"] != "missing"]
    rows = []
    for r in have.itertuples(index=False):
        d = r._asdict()
        for q in quantities:
            rows.append(
                {
                    "checkpoint": d["checkpoint"],
                    "size": d["size"],
                    "quantity": q,
                    "label": QUANTITY_LABELS[q],
                    "value": d[q],
                    "lo": d[f"{q}_lo"],
                    "hi": d[f"{q}_hi"],
                    "k": d.get(f"{q}_k"),
                    "of": d.get(f"{q}_n"),
                    "source": d["source"],
                }
            )
    return pd.DataFrame(
        rows, columns=["checkpoint", "size", "quantity", "label", "value", "lo", "hi", "k", "of", "source"]
    )


def predicted_observed(frame: pd.DataFrame) -> pd.DataFrame:
    """Predicted vs observed accuracy per cell with bootstrap intervals and their difference."""
    have = frame[frame["source"] != "missing"]
    out = have[
        [
            "checkpoint",
            "size",
            "in_distribution",
            "predicted",
            "predicted_lo",
            "predicted_hi",
            "observed",
            "observed_lo",
            "observed_hi",
            "mean_attempts",
            "source",
        ]
    ].copy()
    out.insert(out.columns.get_loc("mean_attempts"), "predicted_minus_observed", out["predicted"] - out["observed"])
    return out.reset_index(drop=True)


def percent_view(frame: pd.DataFrame) -> pd.DataFrame:
    """The long frame for display: probabilities as % rounded to 0.1, bookkeeping columns last."""
    out = frame.copy()
    prob = [
        c
        for c in out.columns
        if c in ("accuracy", "wald_lo", "wald_hi", "wilson_lo", "wilson_hi", "paper_accuracy", "malformed")
        or any(c == q or c in (f"{q}_lo", f"{q}_hi") for q in QUANTITIES)
    ]
    for c in prob:
        out[c] = (100 * out[c]).round(1)
    out["mean_attempts"] = out["mean_attempts"].round(2)
    return out.rename(columns={c: f"{c} %" for c in prob})


PAPER_PDW_KEPT = 0.4  # the paper: RL keeps p_d|W at 40-60 % out of distribution
PAPER_PDW_COLLAPSED = 0.2  # ... while SFT with reflection lets it fall toward 0


def _larger_than_training(size: str) -> bool:
    from ds_core.episodes.tasks import TaskSpec

    s = TaskSpec.parse(size)
    return s.a_digits >= 3 and s.b_digits >= 3 and size not in ("3x3", "3x4")


def _below_training(size: str) -> bool:
    from ds_core.episodes.tasks import TaskSpec

    s = TaskSpec.parse(size)
    return s.a_digits < 3 or s.b_digits < 3


def pooled(frame: pd.DataFrame, label: str, sizes, q: str = "p_dW") -> tuple[int, int]:
    """(k, n) of quantity `q` pooled over `sizes` for checkpoint `label` (cells with counts)."""
    rows = frame[(frame["checkpoint"] == label) & frame["size"].isin(list(sizes)) & (frame["source"] != "missing")]
    k = pd.to_numeric(rows[f"{q}_k"], errors="coerce").fillna(0).sum()
    n = pd.to_numeric(rows[f"{q}_n"], errors="coerce").fillna(0).sum()
    return int(k), int(n)


def figure2_reading(frame: pd.DataFrame) -> list[str]:
    """What Figure 2 shows here about p_d|W beyond the training sizes, per checkpoint (pooled
    counts), and whether the paper's pattern (RL keeps it >= 40 %, SFT with reflection lets it fall
    below 20 %) is seen, by that stated rule; sentences about sizes below the training sizes."""
    if not len(frame):
        return []
    sizes = list(dict.fromkeys(frame["size"]))
    ood = [s for s in sizes if _larger_than_training(s)]
    out = []
    if ood:
        parts, value = [], {}
        for label in dict.fromkeys(frame["checkpoint"]):
            k, n = pooled(frame, label, ood)
            if n:
                value[label] = k / n
                parts.append(f"{label} {k}/{n} = {k / n:.0%}")
            else:
                parts.append(f"{label}: no wrong attempt with a decision")
        out.append(f"Here, p_d|W pooled over {ood[0]}..{ood[-1]}: " + "; ".join(parts) + ".")
        cond = dict(zip(frame["checkpoint"], frame["paper_condition"]))
        rl = [v for lab, v in value.items() if cond.get(lab) == "rl"]
        sr = [v for lab, v in value.items() if cond.get(lab) == "sft_reflection"]
        if rl and sr:
            seen = min(rl) >= PAPER_PDW_KEPT and max(sr) <= PAPER_PDW_COLLAPSED
            out.append(
                "The paper reports RL keeping p_d|W at 40–60 % out of distribution while SFT with reflection "
                "lets it collapse toward 0. "
                + (
                    "These checkpoints show that pattern (RL ≥ 40 %, SFT with reflection ≤ 20 %)."
                    if seen
                    else "These checkpoints do **not** show that pattern (the rule: RL ≥ 40 % and SFT with "
                    "reflection ≤ 20 %, pooled over these sizes)."
                )
            )
    below = [s for s in sizes if _below_training(s)]
    if below:
        acc = []
        for label in dict.fromkeys(frame["checkpoint"]):
            rows = frame[(frame["checkpoint"] == label) & frame["size"].isin(below) & (frame["source"] != "missing")]
            k, n = int(pd.to_numeric(rows["k"]).sum()), int(pd.to_numeric(rows["n"]).sum())
            if n:
                acc.append(f"{label} {k}/{n} = {k / n:.0%}")
        out.append(
            f"{', '.join(below)} {'is' if len(below) == 1 else 'are'} smaller than the fine-tuning sizes (3x3, "
            "3x4): out of distribution for the shipped sft, sft_reflection and rl, which were fine-tuned on "
            "3x3/3x4 only (the shipped base's training mix has 1- and 2-digit first operands)."
            + (f" Accuracy there, pooled: {'; '.join(acc)}." if acc else "")
        )
    return out
