"""Charts of the custom-prompts page: plain functions DataFrame -> plotly Figure.

`accuracy_figure(summary)`: accuracy per checkpoint with the paper's 95% Wald interval.
`decisions_figure(results)`: per checkpoint, the share of rows by decision sequence
("STOP", "RESAMPLE,STOP", ...), i.e. how often the decision policy asked for another attempt.
"""

from __future__ import annotations

import math

import pandas as pd
import plotly.graph_objects as go

ACC_COLOUR = "#1d4ed8"
_SEQ_COLOURS = ["#16a34a", "#f59e0b", "#ea580c", "#c2410c", "#7f1d1d", "#6b21a8", "#6b7280"]


def _empty(title: str, msg: str) -> go.Figure:
    fig = go.Figure()
    fig.add_annotation(text=msg, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    fig.update_layout(title=title, xaxis_visible=False, yaxis_visible=False, height=300)
    return fig


def accuracy_figure(summary: pd.DataFrame) -> go.Figure:
    """Bars of accuracy (%) per checkpoint with Wald 95% error bars; columns checkpoint, n,
    accuracy, wald_lo, wald_hi."""
    title = "Accuracy per checkpoint (95% Wald interval)"
    rows = summary[summary["n"] > 0] if len(summary) else summary
    if not len(rows):
        return _empty(title, "no rows ran")
    acc = 100 * rows["accuracy"].astype(float)
    lo = 100 * rows["wald_lo"].astype(float)
    hi = 100 * rows["wald_hi"].astype(float)
    fig = go.Figure(
        go.Bar(
            x=rows["checkpoint"].astype(str),
            y=acc,
            marker_color=ACC_COLOUR,
            error_y=dict(
                type="data", symmetric=False, array=(hi - acc).clip(lower=0), arrayminus=(acc - lo).clip(lower=0)
            ),
            text=[f"{a:.0f}% (n={n})" if not math.isnan(a) else "" for a, n in zip(acc, rows["n"])],
            textposition="outside",
            cliponaxis=False,
            hovertemplate="%{x}: %{y:.1f}%<extra></extra>",
        )
    )
    fig.update_layout(
        title=title, yaxis_title="accuracy (%)", yaxis_range=[0, 110], height=360, margin=dict(t=60, b=40)
    )
    return fig


def decisions_figure(results: pd.DataFrame, max_kinds: int = 6) -> go.Figure:
    """Stacked bars: per checkpoint, the percentage of rows with each decision sequence. Sequences
    beyond the `max_kinds` most common are pooled as 'other'; an empty sequence is '(none)'."""
    title = "Decision sequences per checkpoint"
    if not len(results):
        return _empty(title, "no rows ran")
    df = results[["checkpoint", "decisions"]].copy()
    df["decisions"] = df["decisions"].fillna("").astype(str).replace("", "(none)")
    top = list(df["decisions"].value_counts().index[:max_kinds])
    df.loc[~df["decisions"].isin(top), "decisions"] = "other"
    kinds = sorted(set(df["decisions"]), key=lambda s: (s == "other", s == "(none)", s.count(","), s))
    counts = df.groupby(["checkpoint", "decisions"]).size().unstack(fill_value=0)
    share = 100 * counts.div(counts.sum(axis=1), axis=0)
    fig = go.Figure()
    for i, k in enumerate(kinds):
        if k not in share:
            continue
        fig.add_bar(
            x=share.index.astype(str),
            y=share[k],
            name=k,
            marker_color=_SEQ_COLOURS[i % len(_SEQ_COLOURS)],
            customdata=counts[k],
            hovertemplate=f"{k}: " + "%{y:.1f}% (%{customdata} rows)<extra></extra>",
        )
    fig.update_layout(
        barmode="stack",
        title=title,
        yaxis_title="rows (%)",
        yaxis_range=[0, 100],
        legend_title="decisions",
        height=360,
        margin=dict(t=60, b=40),
    )
    return fig
