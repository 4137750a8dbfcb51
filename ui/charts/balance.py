"""Charts of the Gradient balance page: plain functions DataFrame -> plotly Figure.

Inputs are the frames of the ds_core.balance* modules (toy_view(...).frame, toy_length_sweep(...),
BalanceResult.frame); nothing here computes gradients or imports torch.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
from plotly.subplots import make_subplots

PARAMS = ("s", "dC", "dW")
PARAM_LABELS = {"s": "θ_s (sampling)", "dC": "θ_d|C (STOP when correct)",
                "dW": "θ_d|W (RESAMPLE when wrong)"}
# sampling blue, decisions orange (as ui.tokens' role colours)
PARAM_COLOURS = {"s": "#1d4ed8", "dC": "#c2410c", "dW": "#f59e0b"}
OBJECTIVE_COLOURS = {
    "surrogate": "#059669", "kl": "#dc2626", "sft": "#7c3aed", "update": "#374151",
    "kl_k3": "#dc2626", "kl_k1": "#f87171", "sft_sum": "#7c3aed", "sft_mean": "#a78bfa",
    "dft": "#0891b2",
}
OUTCOME_ORDER = ("correct_kept", "wrong_revised", "wrong_kept", "correct_changed", "undecided")
OUTCOME_COLOURS = {"correct_kept": "#16a34a", "wrong_revised": "#2563eb", "wrong_kept": "#dc2626",
                   "correct_changed": "#f59e0b", "undecided": "#6b7280"}
METRIC_LABELS = {
    "ratio_SD": "|G_S| / |G_D|", "ratio_SD_per_token": "(|G_S|/n_S) / (|G_D|/n_D)",
    "norm_G_S": "|G_S| (sampling gradient norm)", "norm_G_D": "|G_D| (decision gradient norm)",
    "log10_ratio_SD": "log10 |G_S| / |G_D|",
    "log10_ratio_SD_per_token": "log10 per-token ratio", "share_D": "decision share <G_D, G>/|G|²",
    "cos_SD": "cos(G_S, G_D)",
}


def _empty(title: str, msg: str = "nothing to show") -> go.Figure:
    fig = go.Figure()
    fig.add_annotation(text=msg, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    fig.update_layout(title=title, xaxis_visible=False, yaxis_visible=False, height=300)
    return fig


def _positive(v: pd.Series) -> pd.Series:
    v = pd.to_numeric(v, errors="coerce").astype(float)
    return v.where(np.isfinite(v) & (v > 0))


# ------------------------------------------------------------------------------- the toy
def figure1(frame: pd.DataFrame, *, log_abs: bool = False, show_sft: bool = True) -> go.Figure:
    """The paper's Figure 1 from a toy_view frame: (a) surrogate gradient per logit, (b) KL
    gradient per logit, (c) the sampling:decision ratio per objective (log axis; 1:1 and 2:1
    lines; the toy SFT ratio as our extension), (d) the net update per logit. `log_abs` plots
    |gradient| on log axes in (a), (b), (d). Reference resets are marked in (c)."""
    if frame is None or not len(frame):
        return _empty("Figure 1")
    titles = ("(a) surrogate gradient", "(b) KL gradient", "(c) sampling : decision ratio",
              "(d) net update lr·(surrogate + KL)")
    fig = make_subplots(rows=2, cols=2, subplot_titles=titles, horizontal_spacing=0.09,
                        vertical_spacing=0.14)
    step = frame["step"]
    for (r, c), prefix in (((1, 1), "surrogate_grad"), ((1, 2), "kl_grad"), ((2, 2), "update")):
        for p in PARAMS:
            y = pd.to_numeric(frame[f"{prefix}_{p}"], errors="coerce").astype(float)
            if log_abs:
                y = _positive(y.abs())
            fig.add_trace(go.Scatter(x=step, y=y, mode="lines", name=PARAM_LABELS[p],
                                     legendgroup=p, showlegend=(r, c) == (1, 1),
                                     line=dict(color=PARAM_COLOURS[p], width=1.6)), row=r, col=c)
        if log_abs:
            fig.update_yaxes(type="log", row=r, col=c)
    ratios = [("surrogate", "surrogate_ratio"), ("kl", "kl_ratio")]
    if show_sft and "sft_ratio" in frame:
        ratios.append(("sft", "sft_ratio"))
    labels = {"surrogate": "surrogate S:D", "kl": "KL S:D", "sft": "SFT S:D (toy extension)"}
    for name, col in ratios:
        fig.add_trace(go.Scatter(x=step, y=_positive(frame[col]), mode="lines", name=labels[name],
                                 line=dict(color=OBJECTIVE_COLOURS[name], width=2,
                                           dash="dot" if name == "sft" else "solid")),
                      row=2, col=1)
    # reference lines as plain shapes (add_hline/add_vline per line are slow): subplot (2, 1) is
    # the third axis pair
    shapes, notes = [], []
    for y, txt in ((1.0, "1:1"), (2.0, "2:1")):
        shapes.append(dict(type="line", xref="x3 domain", yref="y3", x0=0, x1=1, y0=y, y1=y,
                           line=dict(color="#9ca3af", dash="dash", width=1)))
        notes.append(dict(xref="x3 domain", yref="y3", x=1.0, y=math.log10(y), text=txt,
                          showarrow=False, xanchor="right", yanchor="bottom",
                          font=dict(size=10, color="#6b7280")))
    fig.update_yaxes(type="log", row=2, col=1)
    if "reset" in frame:
        resets = frame.loc[frame["reset"].astype(bool), "step"].tolist()
        if 0 < len(resets) <= 60:
            shapes += [dict(type="line", xref="x3", yref="y3 domain", x0=s, x1=s, y0=0, y1=1,
                            line=dict(color="#e5e7eb", width=1), layer="below") for s in resets]
    fig.update_layout(shapes=shapes)
    for a in notes:
        fig.add_annotation(**a)
    for r in (1, 2):
        for c in (1, 2):
            fig.update_xaxes(title_text="training step" if r == 2 else None, row=r, col=c)
    fig.update_layout(height=640, legend=dict(orientation="h", y=-0.12),
                      margin=dict(t=60, b=40, l=50, r=20),
                      title="Toy: gradients per logit and the sampling:decision attribution ratio")
    return fig


def toy_policy_fig(frame: pd.DataFrame) -> go.Figure:
    """p_s, p_d|C, p_d|W and E[R] over the toy's training steps (solid), and the reference
    policy's p_s, p_d|C, p_d|W (dotted)."""
    if frame is None or not len(frame):
        return _empty("Policy over training")
    fig = go.Figure()
    sig = lambda x: 1.0 / (1.0 + np.exp(-pd.to_numeric(x, errors="coerce").astype(float)))  # noqa: E731
    for p, col in (("s", "p_s"), ("dC", "p_dC"), ("dW", "p_dW")):
        fig.add_trace(go.Scatter(x=frame["step"], y=frame[col], mode="lines",
                                 name=f"{col.replace('p_d', 'p_d|')}", line=dict(color=PARAM_COLOURS[p], width=2)))
        fig.add_trace(go.Scatter(x=frame["step"], y=sig(frame[f"ref_{p}"]), mode="lines",
                                 name=f"reference {col.replace('p_d', 'p_d|')}", showlegend=True,
                                 line=dict(color=PARAM_COLOURS[p], width=1, dash="dot")))
    fig.add_trace(go.Scatter(x=frame["step"], y=frame["reward_mean"], mode="lines", name="E[R]",
                             line=dict(color="#111827", width=2.5)))
    fig.update_layout(title="Toy: policy probabilities and expected reward over training",
                      xaxis_title="training step", yaxis_title="probability",
                      yaxis_range=[0, 1.02], height=380, legend=dict(orientation="h", y=-0.2),
                      margin=dict(t=50, b=40, l=50, r=20))
    return fig


def toy_length_fig(sweep: pd.DataFrame, labels: dict | None = None) -> go.Figure:
    """Median sampling:decision ratio (error bars: quartiles over states/steps) against the toy's
    attempt length L, per objective, log-log, with a dotted 'proportional to L' guide."""
    if sweep is None or not len(sweep):
        return _empty("Toy: ratio vs attempt length")
    labels = labels or {}
    fig = go.Figure()
    for name, g in sweep.groupby("objective", sort=False):
        g = g.sort_values("attempt_length")
        med = _positive(g["median"])
        fig.add_trace(go.Scatter(
            x=g["attempt_length"], y=med, mode="lines+markers", name=labels.get(name, name),
            line=dict(color=OBJECTIVE_COLOURS.get(name), width=2),
            error_y=dict(type="data", symmetric=False, array=(_positive(g["q3"]) - med).clip(lower=0),
                         arrayminus=(med - _positive(g["q1"])).clip(lower=0), thickness=1)))
    ls = np.array(sorted(sweep["attempt_length"].unique()), dtype=float)
    kl = sweep[(sweep["objective"] == "kl") & np.isfinite(sweep["median"])].sort_values("attempt_length")
    if len(kl):
        base = float(kl["median"].iloc[0]) / float(kl["attempt_length"].iloc[0])
        if base > 0 and math.isfinite(base):
            fig.add_trace(go.Scatter(x=ls, y=base * ls, mode="lines", name="∝ L (guide)",
                                     line=dict(color="#9ca3af", dash="dot", width=1)))
    fig.add_hline(y=1.0, line=dict(color="#9ca3af", dash="dash", width=1))
    fig.update_layout(title="Toy: sampling:decision ratio vs attempt length L",
                      xaxis=dict(title="attempt length L (sampling tokens per attempt)", type="log",
                                 tickvals=ls.tolist(), ticktext=[f"{x:g}" for x in ls]),
                      yaxis=dict(title="|g_s| / |(g_dC, g_dW)|", type="log"), height=420,
                      legend=dict(orientation="h", y=-0.25), margin=dict(t=50, b=40, l=60, r=20))
    return fig


# ------------------------------------------------------------------------------- real model
def dataset_fig(frame: pd.DataFrame, *, metric: str = "log10_ratio_SD", kind: str = "box",
                facet: str | None = "checkpoint", colour: str | None = "outcome",
                labels: dict | None = None) -> go.Figure:
    """Distribution of `metric` per objective (x), coloured by `colour` and faceted by `facet`
    (columns of the frame, or None); kind 'box', 'violin' or 'strip'."""
    title = f"{METRIC_LABELS.get(metric, metric)} per objective"
    if frame is None or not len(frame) or metric not in frame:
        return _empty(title)
    df = frame.copy()
    df[metric] = pd.to_numeric(df[metric], errors="coerce").astype(float)
    df = df[np.isfinite(df[metric])]
    if not len(df):
        return _empty(title, "no finite values")
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
    hover = [c for c in ("size", "problem", "outcome", "n_sampling", "n_decision", "ratio_SD")
             if c in df.columns]
    common = dict(x="objective_label", y=metric, color=colour, facet_col=facet,
                  facet_col_wrap=2 if facet and df[facet].nunique() > 2 else 0,
                  category_orders=orders, hover_data=hover,
                  labels={"objective_label": "objective", metric: METRIC_LABELS.get(metric, metric)})
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
    fig.update_layout(title=title, height=330 * n_rows + 120, legend=dict(orientation="h", y=-0.15),
                      margin=dict(t=60, b=40, l=60, r=20))
    return fig


def sweep_fig(frame: pd.DataFrame, *, metric: str = "ratio_SD", facet: str | None = "checkpoint",
              labels: dict | None = None, objectives=None) -> go.Figure:
    """A length sweep: `metric` (a ratio or a gradient norm) per teacher-forced trace against its
    sampling-token count, log-log, points per trace and a line through the per-size medians, one
    colour per objective, faceted by checkpoint."""
    title = f"{METRIC_LABELS.get(metric, metric)} vs sampling tokens per trace"
    if frame is None or not len(frame) or metric not in frame:
        return _empty(title)
    df = frame.copy()
    if objectives:
        df = df[df["objective"].isin(list(objectives))]
    df[metric] = _positive(df[metric])
    df = df[df[metric].notna() & (pd.to_numeric(df["n_sampling"], errors="coerce") > 0)]
    if not len(df):
        return _empty(title, "no positive finite values")
    labels = labels or {}
    df["objective_label"] = df["objective"].map(lambda o: labels.get(o, o))
    facet = facet if facet in df.columns and df[facet].nunique() > 1 else None
    keys = ["objective", "objective_label", "size"] + ([facet] if facet else [])
    med = (df.groupby(keys, sort=False)
             .agg(n_sampling=("n_sampling", "median"), value=(metric, "median")).reset_index()
             .sort_values("n_sampling"))
    cmap = {labels.get(k, k): v for k, v in OBJECTIVE_COLOURS.items()}
    orders = {"objective_label": list(dict.fromkeys(df["objective_label"]))}
    if facet:
        orders[facet] = list(dict.fromkeys(df[facet]))
    wrap = 2 if facet and df[facet].nunique() > 2 else 0
    fig = px.line(med, x="n_sampling", y="value", color="objective_label", facet_col=facet,
                  facet_col_wrap=wrap, log_x=True, log_y=True, markers=False,
                  category_orders=orders, color_discrete_map=cmap, hover_data=["size"],
                  labels={"n_sampling": "sampling tokens", "value": METRIC_LABELS.get(metric, metric),
                          "objective_label": "objective"})
    pts = px.scatter(df, x="n_sampling", y=metric, color="objective_label", facet_col=facet,
                     facet_col_wrap=wrap, log_x=True, log_y=True, category_orders=orders,
                     color_discrete_map=cmap, opacity=0.6,
                     hover_data=[c for c in ("size", "problem", "n_decision") if c in df])
    # objectives with identical values (surrogate, sft_sum, sft_mean, kl_k1 on one trace) overlap:
    # the surrogate's line is drawn wide underneath so it stays visible
    surr = labels.get("surrogate", "surrogate")
    fig.for_each_trace(lambda tr: tr.update(line_width=6 if tr.name == surr else 2,
                                            opacity=0.6 if tr.name == surr else 1.0))
    for tr in pts.data:
        tr.showlegend = False
        tr.marker.size = 6
        fig.add_trace(tr)
    fig.for_each_annotation(lambda a: a.update(text=a.text.split("=")[-1]))
    n_rows = math.ceil(df[facet].nunique() / 2) if wrap else 1
    fig.update_layout(title=title, height=330 * n_rows + 120, legend=dict(orientation="h", y=-0.15),
                      margin=dict(t=60, b=40, l=60, r=20))
    return fig
