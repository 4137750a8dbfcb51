"""Charts of the Gradient balance page's toy: Figure 1, the policy over training, the ratio against
the attempt length (frames of ds_core.analysis.toy_sweeps: toy_view(...).frame, toy_length_sweep(...))."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ui.charts.axes import log_axis
from ui.charts.balance import OBJECTIVE_COLOURS, PARAM_COLOURS, PARAM_LABELS, PARAMS, empty_figure, positive


def figure1(frame: pd.DataFrame, *, log_abs: bool = False, show_sft: bool = True) -> go.Figure:
    """The paper's Figure 1 from a toy_view frame: (a) surrogate gradient per logit, (b) KL
    gradient per logit, (c) the sampling:decision ratio per objective (log axis; 1:1 and 2:1
    lines; the toy SFT ratio as our extension), (d) the net update per logit. `log_abs` plots
    |gradient| on log axes in (a), (b), (d). Reference resets are marked in (c)."""
    if frame is None or not len(frame):
        return empty_figure("Figure 1")
    titles = (
        "(a) surrogate gradient",
        "(b) KL gradient",
        "(c) sampling : decision ratio",
        "(d) net update lr·(surrogate + KL)",
    )
    fig = make_subplots(rows=2, cols=2, subplot_titles=titles, horizontal_spacing=0.09, vertical_spacing=0.14)
    step = frame["step"]
    for (r, c), prefix in (((1, 1), "surrogate_grad"), ((1, 2), "kl_grad"), ((2, 2), "update")):
        for p in PARAMS:
            y = pd.to_numeric(frame[f"{prefix}_{p}"], errors="coerce").astype(float)
            if log_abs:
                y = positive(y.abs())
            fig.add_trace(
                go.Scatter(
                    x=step,
                    y=y,
                    mode="lines",
                    name=PARAM_LABELS[p],
                    legendgroup=p,
                    showlegend=(r, c) == (1, 1),
                    line=dict(color=PARAM_COLOURS[p], width=1.6),
                ),
                row=r,
                col=c,
            )
        if log_abs:
            fig.update_yaxes(**log_axis(), row=r, col=c)
    ratios = [("surrogate", "surrogate_ratio"), ("kl", "kl_ratio")]
    if show_sft and "sft_ratio" in frame:
        ratios.append(("sft", "sft_ratio"))
    labels = {"surrogate": "surrogate S:D", "kl": "KL S:D", "sft": "SFT S:D (toy extension)"}
    for name, col in ratios:
        fig.add_trace(
            go.Scatter(
                x=step,
                y=positive(frame[col]),
                mode="lines",
                name=labels[name],
                line=dict(color=OBJECTIVE_COLOURS[name], width=2, dash="dot" if name == "sft" else "solid"),
            ),
            row=2,
            col=1,
        )
    # reference lines as plain shapes (add_hline/add_vline per line are slow): subplot (2, 1) is
    # the third axis pair
    shapes, notes = [], []
    for y, txt in ((1.0, "1:1"), (2.0, "2:1")):
        shapes.append(
            dict(
                type="line",
                xref="x3 domain",
                yref="y3",
                x0=0,
                x1=1,
                y0=y,
                y1=y,
                line=dict(color="#9ca3af", dash="dash", width=1),
            )
        )
        notes.append(
            dict(
                xref="x3 domain",
                yref="y3",
                x=1.0,
                y=math.log10(y),
                text=txt,
                showarrow=False,
                xanchor="right",
                yanchor="bottom",
                font=dict(size=10, color="#6b7280"),
            )
        )
    fig.update_yaxes(**log_axis([v for _, c in ratios for v in frame[c]]), row=2, col=1)
    if "reset" in frame:
        resets = frame.loc[frame["reset"].astype(bool), "step"].tolist()
        if 0 < len(resets) <= 60:
            shapes += [
                dict(
                    type="line",
                    xref="x3",
                    yref="y3 domain",
                    x0=s,
                    x1=s,
                    y0=0,
                    y1=1,
                    line=dict(color="#e5e7eb", width=1),
                    layer="below",
                )
                for s in resets
            ]
    fig.update_layout(shapes=shapes)
    for a in notes:
        fig.add_annotation(**a)
    for r in (1, 2):
        for c in (1, 2):
            fig.update_xaxes(title_text="training step" if r == 2 else None, row=r, col=c)
    fig.update_layout(
        height=640,
        legend=dict(orientation="h", y=-0.12),
        margin=dict(t=60, b=40, l=50, r=20),
        title="Toy: gradients per logit and the sampling:decision attribution ratio",
    )
    return fig


def toy_policy_fig(frame: pd.DataFrame) -> go.Figure:
    """p_s, p_d|C, p_d|W and E[R] over the toy's training steps (solid), and the reference
    policy's p_s, p_d|C, p_d|W (dotted)."""
    if frame is None or not len(frame):
        return empty_figure("Policy over training")
    fig = go.Figure()
    sig = lambda x: 1.0 / (1.0 + np.exp(-pd.to_numeric(x, errors="coerce").astype(float)))  # noqa: E731
    for p, col in (("s", "p_s"), ("dC", "p_dC"), ("dW", "p_dW")):
        fig.add_trace(
            go.Scatter(
                x=frame["step"],
                y=frame[col],
                mode="lines",
                name=f"{col.replace('p_d', 'p_d|')}",
                line=dict(color=PARAM_COLOURS[p], width=2),
            )
        )
        fig.add_trace(
            go.Scatter(
                x=frame["step"],
                y=sig(frame[f"ref_{p}"]),
                mode="lines",
                name=f"reference {col.replace('p_d', 'p_d|')}",
                showlegend=True,
                line=dict(color=PARAM_COLOURS[p], width=1, dash="dot"),
            )
        )
    fig.add_trace(
        go.Scatter(
            x=frame["step"], y=frame["reward_mean"], mode="lines", name="E[R]", line=dict(color="#111827", width=2.5)
        )
    )
    fig.update_layout(
        title="Toy: policy probabilities and expected reward over training",
        xaxis_title="training step",
        yaxis_title="probability",
        yaxis_range=[0, 1.02],
        height=380,
        legend=dict(orientation="h", y=-0.2),
        margin=dict(t=50, b=40, l=50, r=20),
    )
    return fig


def toy_length_fig(sweep: pd.DataFrame, labels: dict | None = None) -> go.Figure:
    """Median sampling:decision ratio (error bars: quartiles over states/steps) against the toy's
    attempt length L, per objective, log-log, with a dotted 'proportional to L' guide."""
    if sweep is None or not len(sweep):
        return empty_figure("Toy: ratio vs attempt length")
    labels = labels or {}
    fig = go.Figure()
    for name, g in sweep.groupby("objective", sort=False):
        g = g.sort_values("attempt_length")
        med = positive(g["median"])
        fig.add_trace(
            go.Scatter(
                x=g["attempt_length"],
                y=med,
                mode="lines+markers",
                name=labels.get(name, name),
                line=dict(color=OBJECTIVE_COLOURS.get(name), width=2),
                error_y=dict(
                    type="data",
                    symmetric=False,
                    array=(positive(g["q3"]) - med).clip(lower=0),
                    arrayminus=(med - positive(g["q1"])).clip(lower=0),
                    thickness=1,
                ),
            )
        )
    ls = np.array(sorted(sweep["attempt_length"].unique()), dtype=float)
    kl = sweep[(sweep["objective"] == "kl") & np.isfinite(sweep["median"])].sort_values("attempt_length")
    if len(kl):
        base = float(kl["median"].iloc[0]) / float(kl["attempt_length"].iloc[0])
        if base > 0 and math.isfinite(base):
            fig.add_trace(
                go.Scatter(
                    x=ls, y=base * ls, mode="lines", name="∝ L (guide)", line=dict(color="#9ca3af", dash="dot", width=1)
                )
            )
    fig.add_hline(y=1.0, line=dict(color="#9ca3af", dash="dash", width=1))
    fig.update_layout(
        title="Toy: sampling:decision ratio vs attempt length L",
        xaxis=dict(
            title="attempt length L (sampling tokens per attempt)",
            type="log",
            tickvals=ls.tolist(),
            ticktext=[f"{x:g}" for x in ls],
        ),
        yaxis=dict(title="|g_s| / |(g_dC, g_dW)|", **log_axis(sweep["median"])),
        height=420,
        legend=dict(orientation="h", y=-0.25),
        margin=dict(t=50, b=40, l=60, r=20),
    )
    return fig
