"""Charts of the episode explorer: plain functions DataFrame -> plotly Figure.

`decision_sampling_figure(figures)`: per objective, |G_S| and |G_D|, the ratio |G_S|/|G_D| (and
its per-token form), cos(G_S, G_D) and the decision share (ui.services.explorer.figures_frame).
`groups_heatmap(groups, metric)`: parameter group x objective heatmap of one metric
(ui.services.explorer.groups_frame).
`segment_figure(segments)`: a decision token's input attribution summed per episode segment
(ui.services.explorer.input_frames).
`token_figure(tokens, value)`: one value per token position as bars coloured by role.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ui.charts.axes import finite_values as _finite
from ui.charts.axes import log_axis
from ui.tokens import ROLE_COLOURS

S_COLOUR, D_COLOUR = ROLE_COLOURS["sampling"], ROLE_COLOURS["decision"]
# metric -> (title, log10 scale?, diverging around 0?)
HEATMAP_METRICS = {
    "ratio_SD": ("|G_S| / |G_D| (log10)", True, False),
    "ratio_SD_per_token": ("per-token ratio (|G_S|/|S|)/(|G_D|/|D|) (log10)", True, False),
    "cos_SD": ("cos(G_S, G_D)", False, True),
    "share_D": ("decision share <G_D, G>/|G|^2", False, True),
    "norm_G_S": ("|G_S| (log10)", True, False),
    "norm_G_D": ("|G_D| (log10)", True, False),
}


def _empty(title: str, msg: str, height: int = 300) -> go.Figure:
    fig = go.Figure()
    fig.add_annotation(text=msg, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    fig.update_layout(title=title, xaxis_visible=False, yaxis_visible=False, height=height)
    return fig


def _fmt(v) -> str:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return str(v)
    if math.isnan(x):
        return "n/a"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:.3g}"


def decision_sampling_figure(figures: pd.DataFrame) -> go.Figure:
    """Four panels of bars, one bar (group) per objective: |G_S| and |G_D| (log), the ratio
    |G_S|/|G_D| and the per-token ratio (log), cos(G_S, G_D), the sampling and decision shares."""
    title = "Decision vs sampling gradient per objective"
    if not len(figures):
        return _empty(title, "no objective could be attributed on this episode")
    x = figures["label"].astype(str).tolist()
    fig = make_subplots(
        rows=2,
        cols=2,
        shared_xaxes=True,  # the objective names once, under the bottom row (no clipped labels)
        horizontal_spacing=0.12,
        vertical_spacing=0.14,
        subplot_titles=("|G_S| and |G_D|", "ratio |G_S| / |G_D|", "cos(G_S, G_D)", "shares of |G|²"),
    )
    for col, name, colour in (("norm_G_S", "|G_S| sampling", S_COLOUR), ("norm_G_D", "|G_D| decision", D_COLOUR)):
        fig.add_trace(
            go.Bar(
                x=x,
                y=_finite(figures[col], True),
                name=name,
                marker_color=colour,
                customdata=[_fmt(v) for v in figures[col]],
                hovertemplate=f"%{{x}} {name} = %{{customdata}}<extra></extra>",
            ),
            1,
            1,
        )
    for col, name, colour in (("ratio_SD", "ratio", "#0f766e"), ("ratio_SD_per_token", "ratio per token", "#99f6e4")):
        fig.add_trace(
            go.Bar(
                x=x,
                y=_finite(figures[col], True),
                name=name,
                marker_color=colour,
                customdata=[_fmt(v) for v in figures[col]],
                hovertemplate=f"%{{x}} {name} = %{{customdata}}<extra></extra>",
            ),
            1,
            2,
        )
    fig.add_trace(
        go.Bar(
            x=x,
            y=_finite(figures["cos_SD"]),
            name="cos",
            marker_color="#7c3aed",
            showlegend=False,
            customdata=[_fmt(v) for v in figures["cos_SD"]],
            hovertemplate="%{x} cos = %{customdata}<extra></extra>",
        ),
        2,
        1,
    )
    for col, name, colour in (("share_S", "sampling", S_COLOUR), ("share_D", "decision", D_COLOUR)):
        fig.add_trace(
            go.Bar(
                x=x,
                y=_finite(figures[col]),
                name=f"share {name}",
                marker_color=colour,
                showlegend=False,
                customdata=[_fmt(v) for v in figures[col]],
                hovertemplate=f"%{{x}} {name} share = %{{customdata}}<extra></extra>",
            ),
            2,
            2,
        )
    fig.update_yaxes(**log_axis([*figures["norm_G_S"], *figures["norm_G_D"]]), row=1, col=1)
    fig.update_yaxes(**log_axis([*figures["ratio_SD"], *figures["ratio_SD_per_token"]]), row=1, col=2)
    fig.update_yaxes(range=[-1.05, 1.05], row=2, col=1)
    fig.update_xaxes(automargin=True, tickangle=-45)  # five names in a narrow panel: slanted, not overlapping
    fig.add_hline(y=1, line_dash="dot", line_color="#6b7280", row=1, col=2)
    fig.update_layout(
        title=title, barmode="group", height=560, margin=dict(t=80, b=40), legend=dict(orientation="h", y=-0.08)
    )
    return fig


def groups_heatmap(groups: pd.DataFrame, metric: str = "ratio_SD") -> go.Figure:
    """Rows: parameter groups (embeddings, layer.i.attn/mlp, ..., 'model' last); columns:
    objectives; colour: `metric` (log10 for ratios and norms, diverging around 0 for cos and
    share); each cell's text is the raw value."""
    if metric not in HEATMAP_METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(HEATMAP_METRICS)}")
    label, log, diverging = HEATMAP_METRICS[metric]
    title = f"Per parameter group: {label}"
    if not len(groups):
        return _empty(title, "no objective could be attributed on this episode")
    objectives = list(dict.fromkeys(groups["objective"]))
    rows = list(dict.fromkeys(groups["group"]))
    rows = [r for r in rows if r != "model"] + (["model"] if "model" in rows else [])
    raw = groups.pivot_table(index="group", columns="objective", values=metric, aggfunc="first", dropna=False).reindex(
        index=rows, columns=objectives
    )
    vals = raw.to_numpy(dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.log10(vals) if log else vals.copy()
    z[~np.isfinite(z)] = np.nan
    text = [[_fmt(v) for v in row] for row in vals]
    kw = dict(colorscale="RdBu_r", zmid=0) if diverging else dict(colorscale="Viridis")
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=objectives,
            y=rows,
            text=text,
            texttemplate="%{text}",
            colorbar=dict(title=label.split(" (")[0]),
            hovertemplate="%{y} / %{x}: %{text}<extra></extra>",
            **kw,
        )
    )
    fig.update_layout(
        title=title, height=max(320, 28 * len(rows) + 140), margin=dict(t=60, b=40), yaxis=dict(autorange="reversed")
    )
    return fig


def segment_figure(segments: pd.DataFrame, title: str = "Input attribution per segment") -> go.Figure:
    """Bars of the summed attribution per segment (prompt, attempt:k, decision:k), coloured by
    role; hover gives |attribution| summed and the token count."""
    if not len(segments):
        return _empty(title, "no earlier tokens")
    colours = [ROLE_COLOURS.get(r, "#111827") for r in segments["role"]]
    fig = go.Figure(
        go.Bar(
            x=segments["segment"].astype(str),
            y=_finite(segments["attribution"]),
            marker_color=colours,
            customdata=np.stack(
                [
                    [_fmt(v) for v in segments["attribution"]],
                    [_fmt(v) for v in segments["abs_attribution"]],
                    segments["tokens"].astype(str),
                ],
                axis=1,
            ),
            hovertemplate="%{x}: sum %{customdata[0]}, sum |.| %{customdata[1]}, "
            "%{customdata[2]} tokens<extra></extra>",
        )
    )
    fig.add_hline(y=0, line_color="#6b7280")
    fig.update_layout(
        title=title, yaxis_title="attribution (sum over the segment's tokens)", height=340, margin=dict(t=60, b=40)
    )
    return fig


def token_figure(tokens: pd.DataFrame, value: str, title: str) -> go.Figure:
    """One bar per token position: `value`, coloured by the token's role."""
    if not len(tokens) or value not in tokens:
        return _empty(title, "nothing to show")
    y = _finite(tokens[value])
    if all(v is None for v in y):
        return _empty(title, f"no finite {value} values")
    fig = go.Figure()
    for role, colour in ROLE_COLOURS.items():
        m = tokens["role"] == role
        if not m.any():
            continue
        sub = tokens[m]
        fig.add_trace(
            go.Bar(
                x=sub["pos"],
                y=_finite(sub[value]),
                name=role,
                marker_color=colour,
                customdata=np.stack([sub["token"].astype(str), [_fmt(v) for v in sub[value]]], axis=1),
                hovertemplate="#%{x} %{customdata[0]}: %{customdata[1]}<extra></extra>",
            )
        )
    fig.update_layout(
        title=title,
        xaxis_title="token position",
        yaxis_title=value,
        height=300,
        bargap=0.05,
        margin=dict(t=60, b=40),
        legend=dict(orientation="h", y=1.12),
    )
    return fig
