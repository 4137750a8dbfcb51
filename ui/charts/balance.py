"""Charts of the Gradient balance page: plain functions DataFrame -> plotly Figure.

Inputs are the frames of ds_core.analysis.balance (BalanceResult.frame); the toy's charts are in
ui.charts.balance_toy. Nothing here computes gradients or imports torch.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from ds_core.episodes.episode import OUTCOMES
from ui.charts.axes import log_axis

PARAMS = ("s", "dC", "dW")
PARAM_LABELS = {"s": "θ_s (sampling)", "dC": "θ_d|C (STOP when correct)", "dW": "θ_d|W (RESAMPLE when wrong)"}
# sampling blue, decisions orange (as ui.tokens' role colours)
PARAM_COLOURS = {"s": "#1d4ed8", "dC": "#c2410c", "dW": "#f59e0b"}
OBJECTIVE_COLOURS = {
    "surrogate": "#059669",
    "kl": "#dc2626",
    "sft": "#7c3aed",
    "update": "#374151",
    "kl_k3": "#dc2626",
    "kl_k1": "#f87171",
    "sft_sum": "#7c3aed",
    "sft_mean": "#a78bfa",
    "dft": "#0891b2",
}
OUTCOME_ORDER = OUTCOMES
OUTCOME_COLOURS = {
    "correct_kept": "#16a34a",
    "wrong_revised": "#2563eb",
    "wrong_kept": "#dc2626",
    "correct_changed": "#f59e0b",
    "undecided": "#6b7280",
}
METRIC_LABELS = {
    "ratio_SD": "|G_S| / |G_D|",
    "ratio_SD_per_token": "(|G_S|/n_S) / (|G_D|/n_D)",
    "norm_G_S": "|G_S| (sampling gradient norm)",
    "norm_G_D": "|G_D| (decision gradient norm)",
    "log10_ratio_SD": "log10 |G_S| / |G_D|",
    "log10_ratio_SD_per_token": "log10 per-token ratio",
    "share_D": "decision share <G_D, G>/|G|²",
    "cos_SD": "cos(G_S, G_D)",
}


def empty_figure(title: str, msg: str = "nothing to show") -> go.Figure:
    fig = go.Figure()
    fig.add_annotation(text=msg, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    fig.update_layout(title=title, xaxis_visible=False, yaxis_visible=False, height=300)
    return fig


def positive(v: pd.Series) -> pd.Series:
    v = pd.to_numeric(v, errors="coerce").astype(float)
    return v.where(np.isfinite(v) & (v > 0))


# ------------------------------------------------------------------------------- real model
def dataset_fig(
    frame: pd.DataFrame,
    *,
    metric: str = "log10_ratio_SD",
    kind: str = "box",
    facet: str | None = "checkpoint",
    colour: str | None = "outcome",
    labels: dict | None = None,
) -> go.Figure:
    """Distribution of `metric` per objective (x), coloured by `colour` and faceted by `facet`
    (columns of the frame, or None); kind 'box', 'violin' or 'strip'."""
    title = f"{METRIC_LABELS.get(metric, metric)} per objective"
    if frame is None or not len(frame) or metric not in frame:
        return empty_figure(title)
    df = frame.copy()
    df[metric] = pd.to_numeric(df[metric], errors="coerce").astype(float)
    df = df[np.isfinite(df[metric])]
    if not len(df):
        return empty_figure(title, "no finite values")
    labels = labels or {}
    df["objective_label"] = df["objective"].map(lambda o: labels.get(o, o))
    facet = facet if facet in df.columns else None
    colour = colour if colour in df.columns else None
    orders = {"objective_label": list(dict.fromkeys(df["objective_label"]))}
    cmap = None
    if colour == "outcome":
        orders["outcome"] = [o for o in OUTCOME_ORDER if o in set(df["outcome"])]
        cmap = OUTCOME_COLOURS
    elif colour == "objective":
        cmap = OBJECTIVE_COLOURS
    if facet:
        orders[facet] = list(dict.fromkeys(df[facet]))
    hover = [c for c in ("size", "problem", "outcome", "n_sampling", "n_decision", "ratio_SD") if c in df.columns]
    common = dict(
        x="objective_label",
        y=metric,
        color=colour,
        facet_col=facet,
        facet_col_wrap=2 if facet and df[facet].nunique() > 2 else 0,
        category_orders=orders,
        hover_data=hover,
        labels={"objective_label": "objective", metric: METRIC_LABELS.get(metric, metric)},
    )
    if cmap:
        common["color_discrete_map"] = cmap
    if kind == "violin":
        fig = px.violin(df, box=True, points=False, **common)
    elif kind == "strip":
        fig = px.strip(df, stripmode="group", **common)
    else:
        fig = px.box(df, points="outliers", **common)
    if kind != "strip":
        fig.update_layout(boxmode="group") if kind == "box" else fig.update_layout(violinmode="group")
    if metric.startswith("log10_ratio"):
        fig.add_hline(y=0.0, line=dict(color="#9ca3af", dash="dash", width=1))
    n_rows = math.ceil(df[facet].nunique() / 2) if facet and df[facet].nunique() > 2 else 1
    fig.for_each_annotation(lambda a: a.update(text=a.text.split("=")[-1]))
    fig.update_layout(
        title=title,
        height=330 * n_rows + 120,
        legend=dict(orientation="h", y=-0.15),
        margin=dict(t=60, b=40, l=60, r=20),
    )
    return fig


def sweep_fig(
    frame: pd.DataFrame,
    *,
    metric: str = "ratio_SD",
    facet: str | None = "checkpoint",
    labels: dict | None = None,
    objectives=None,
) -> go.Figure:
    """A length sweep: `metric` (a ratio or a gradient norm) per teacher-forced trace against its
    sampling-token count, log-log, points per trace and a line through the per-size medians, one
    colour per objective, faceted by checkpoint."""
    title = f"{METRIC_LABELS.get(metric, metric)} vs sampling tokens per trace"
    if frame is None or not len(frame) or metric not in frame:
        return empty_figure(title)
    df = frame.copy()
    if objectives:
        df = df[df["objective"].isin(list(objectives))]
    df[metric] = positive(df[metric])
    df = df[df[metric].notna() & (pd.to_numeric(df["n_sampling"], errors="coerce") > 0)]
    if not len(df):
        return empty_figure(title, "no positive finite values")
    labels = labels or {}
    df["objective_label"] = df["objective"].map(lambda o: labels.get(o, o))
    facet = facet if facet in df.columns and df[facet].nunique() > 1 else None
    keys = ["objective", "objective_label", "size"] + ([facet] if facet else [])
    med = (
        df.groupby(keys, sort=False)
        .agg(n_sampling=("n_sampling", "median"), value=(metric, "median"))
        .reset_index()
        .sort_values("n_sampling")
    )
    cmap = {labels.get(k, k): v for k, v in OBJECTIVE_COLOURS.items()}
    orders = {"objective_label": list(dict.fromkeys(df["objective_label"]))}
    if facet:
        orders[facet] = list(dict.fromkeys(df[facet]))
    wrap = 2 if facet and df[facet].nunique() > 2 else 0
    fig = px.line(
        med,
        x="n_sampling",
        y="value",
        color="objective_label",
        facet_col=facet,
        facet_col_wrap=wrap,
        log_x=True,
        log_y=True,
        markers=False,
        category_orders=orders,
        color_discrete_map=cmap,
        hover_data=["size"],
        labels={
            "n_sampling": "sampling tokens",
            "value": METRIC_LABELS.get(metric, metric),
            "objective_label": "objective",
        },
    )
    pts = px.scatter(
        df,
        x="n_sampling",
        y=metric,
        color="objective_label",
        facet_col=facet,
        facet_col_wrap=wrap,
        log_x=True,
        log_y=True,
        category_orders=orders,
        color_discrete_map=cmap,
        opacity=0.6,
        hover_data=[c for c in ("size", "problem", "n_decision") if c in df],
    )
    # objectives with identical values (surrogate, sft_sum, sft_mean, kl_k1 on one trace) overlap:
    # the surrogate's line is drawn wide underneath so it stays visible
    surr = labels.get("surrogate", "surrogate")
    fig.for_each_trace(
        lambda tr: tr.update(line_width=6 if tr.name == surr else 2, opacity=0.6 if tr.name == surr else 1.0)
    )
    for tr in pts.data:
        tr.showlegend = False
        tr.marker.size = 6
        fig.add_trace(tr)
    fig.for_each_annotation(lambda a: a.update(text=a.text.split("=")[-1]))
    n_rows = math.ceil(df[facet].nunique() / 2) if wrap else 1
    fig.update_xaxes(**log_axis(df["n_sampling"]))
    fig.update_yaxes(**log_axis(df[metric]))
    fig.update_layout(
        title=title,
        height=330 * n_rows + 120,
        legend=dict(orientation="h", y=-0.15),
        margin=dict(t=60, b=40, l=60, r=20),
    )
    return fig
