"""Charts of the calibration page: plain functions DataFrame -> plotly Figure (no Streamlit).

- accuracy_figure: accuracy vs size with 95% error bars per checkpoint, the paper's Table 1 as
  dashed lines ('paper: RL'), the training sizes shaded (Table 1);
- calibration_figure: p_s, p_d|C, p_d|W vs size with bootstrap intervals, one panel each (Figure 2);
- predicted_observed_figure: predicted vs observed accuracy with bootstrap intervals on both axes
  and the y = x line (Figure 3).
Inputs are the frames of ui.services.calibration and ui.services.calibration_views (probabilities in 0..1;
axes show %).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from ds_core.episodes.tasks import TaskError
from ui.services.calibration import size_axis_title

PALETTE = ("#1d4ed8", "#c2410c", "#15803d", "#7c3aed", "#be185d", "#0e7490", "#a16207", "#4b5563")
PAPER_GREY = "#6b7280"
TRAIN_SIZES = ("3x3", "3x4")


def colour_map(labels) -> dict[str, str]:
    """A stable colour per checkpoint label, in order of first appearance."""
    out: dict[str, str] = {}
    for lab in labels:
        if lab not in out:
            out[lab] = PALETTE[len(out) % len(PALETTE)]
    return out


def _floats(xs) -> np.ndarray:
    return pd.to_numeric(pd.Series(list(xs), dtype=object), errors="coerce").to_numpy(dtype=float)


def _nan_to_none(xs):
    return [None if math.isnan(x) else float(x) for x in _floats(xs)]


def error_bars(values, lo, hi):
    """Asymmetric error-bar arrays (plus, minus) from values and interval bounds; gaps where nan."""
    v, lo, hi = _floats(values), _floats(lo), _floats(hi)
    with np.errstate(invalid="ignore"):
        return _nan_to_none(np.maximum(hi - v, 0)), _nan_to_none(np.maximum(v - lo, 0))


def empty_figure(title: str, msg: str) -> go.Figure:
    fig = go.Figure()
    fig.add_annotation(text=msg, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    fig.update_layout(title=title, xaxis_visible=False, yaxis_visible=False, height=320)
    return fig


def _size_title(sizes) -> str:
    try:
        return size_axis_title(sizes)
    except TaskError:  # a label that is not a size: say nothing about digits
        return "size"


def size_axis(fig: go.Figure, sizes, **kw) -> None:
    fig.update_xaxes(
        type="category", categoryorder="array", categoryarray=list(sizes), title_text=_size_title(sizes), **kw
    )


def _shade_training(fig: go.Figure, sizes, row=None, col=None, label=True) -> None:
    idx = [i for i, s in enumerate(sizes) if s in TRAIN_SIZES]
    if not idx:
        return
    kw = {} if row is None else {"row": row, "col": col}
    fig.add_vrect(
        x0=min(idx) - 0.5,
        x1=max(idx) + 0.5,
        fillcolor="#e5e7eb",
        opacity=0.5,
        line_width=0,
        layer="below",
        annotation_text="training sizes" if label else None,
        annotation_position="top left",
        **kw,
    )


def accuracy_figure(
    frame: pd.DataFrame, paper: pd.DataFrame | None = None, interval: str = "wald", sizes=None
) -> go.Figure:
    """Accuracy (%) vs size: one solid line per checkpoint with 95% `interval` ('wald' or 'wilson')
    error bars; paper rows (ui.services.calibration_views.paper_frame) as dashed lines without bars, in the
    colour of the checkpoint of the same condition when one is shown."""
    have = frame[frame["source"] != "missing"] if len(frame) else frame
    title = f"Accuracy with 95% {'Wald' if interval == 'wald' else 'Wilson'} intervals"
    if not len(have) and (paper is None or not len(paper)):
        return empty_figure(title, "no results to show yet: compute the missing runs")
    if sizes is None:
        extra = list(paper["size"]) if paper is not None else []
        sizes = dict.fromkeys(list(frame["size"]) + extra)
    sizes = list(sizes)
    colours = colour_map(frame["checkpoint"])
    fig = go.Figure()
    _shade_training(fig, sizes)
    for label, g in have.groupby("checkpoint", sort=False):
        g = g.set_index("size").reindex([s for s in sizes if s in set(g["size"])])
        plus, minus = error_bars(g["accuracy"], g[f"{interval}_lo"], g[f"{interval}_hi"])
        fig.add_trace(
            go.Scatter(
                x=list(g.index),
                y=_nan_to_none(g["accuracy"]),
                name=str(label),
                mode="lines+markers",
                line=dict(color=colours[label], width=2),
                marker=dict(size=8),
                error_y=dict(type="data", symmetric=False, array=plus, arrayminus=minus, thickness=1.5),
                customdata=list(zip(g["source"], g["k"].astype(object), g["n"].astype(object))),
                hovertemplate=(
                    f"<b>{label}</b> %{{x}}<br>accuracy %{{y:.0%}} (%{{customdata[1]}}/"
                    "%{customdata[2]})<br>source: %{customdata[0]}<extra></extra>"
                ),
            )
        )
    if paper is not None and len(paper):
        cond_colour = (
            {c: colours[lab] for lab, c in zip(have["checkpoint"], have["paper_condition"]) if isinstance(c, str)}
            if "paper_condition" in have
            else {}
        )
        for (cond, label), g in paper.groupby(["condition", "label"], sort=False):
            g = g.set_index("size").reindex([s for s in sizes if s in set(g["size"])])
            fig.add_trace(
                go.Scatter(
                    x=list(g.index),
                    y=_nan_to_none(g["accuracy"]),
                    name=str(label),
                    mode="lines+markers",
                    line=dict(color=cond_colour.get(cond, PAPER_GREY), dash="dash", width=1.5),
                    marker=dict(symbol="circle-open", size=7),
                    opacity=0.8,
                    hovertemplate=f"<b>{label}</b> (Qwen2.5-7B) %{{x}}<br>accuracy %{{y:.0%}}<extra></extra>",
                )
            )
    size_axis(fig, sizes)
    fig.update_yaxes(title_text="accuracy", tickformat=".0%", range=[-0.03, 1.05])
    fig.update_layout(
        title=title,
        legend_title_text="solid: DS-Lens · dashed: paper",
        height=430,
        margin=dict(t=60, r=10),
        hovermode="closest",
    )
    return fig


PANELS = (
    ("p_s", "p_s = P(attempt correct)"),
    ("p_dC", "p_d|C = P(STOP | correct)"),
    ("p_dW", "p_d|W = P(RESAMPLE | wrong)"),
)
NAMES = {"p_s": "p_s", "p_dC": "p_d|C", "p_dW": "p_d|W"}


def calibration_figure(long: pd.DataFrame, sizes=None) -> go.Figure:
    """Figure 2: p_s, p_d|C, p_d|W vs size, one panel each, one line per checkpoint with bootstrap
    95% error bars. `long` is ui.services.calibration_views.calibration_long(frame)."""
    title = "Calibration model vs size (bootstrap 95% intervals)"
    if not len(long):
        return empty_figure(title, "no results to show yet: compute the missing runs")
    sizes = list(sizes if sizes is not None else dict.fromkeys(long["size"]))
    colours = colour_map(long["checkpoint"])
    gap = 0.04
    width = (1 - 2 * gap) / 3
    layout: dict = {
        "title": {"text": title},
        "height": 440,
        "margin": {"t": 80, "r": 10, "b": 70},
        "annotations": [],
        "shapes": [],
    }
    train = [i for i, s in enumerate(sizes) if s in TRAIN_SIZES]
    traces = []
    for col, (q, panel_title) in enumerate(PANELS, start=1):
        x0 = (col - 1) * (width + gap)
        sfx = "" if col == 1 else str(col)
        layout[f"xaxis{sfx}"] = {
            "domain": [x0, x0 + width],
            "anchor": f"y{sfx}",
            "type": "category",
            "categoryorder": "array",
            "categoryarray": sizes,
            "title": {"text": _size_title(sizes) if col == 2 else "size"},
        }
        layout[f"yaxis{sfx}"] = {
            "anchor": f"x{sfx}",
            "range": [-0.03, 1.05],
            "tickformat": ".0%",
            **({"title": {"text": "probability"}} if col == 1 else {"matches": "y", "showticklabels": False}),
        }
        layout["annotations"].append(
            {
                "text": panel_title,
                "x": x0 + width / 2,
                "y": 1.0,
                "xref": "paper",
                "yref": "paper",
                "xanchor": "center",
                "yanchor": "bottom",
                "showarrow": False,
            }
        )
        if train:
            layout["shapes"].append(
                {
                    "type": "rect",
                    "xref": f"x{sfx}",
                    "yref": f"y{sfx} domain",
                    "x0": min(train) - 0.5,
                    "x1": max(train) + 0.5,
                    "y0": 0,
                    "y1": 1,
                    "fillcolor": "#e5e7eb",
                    "opacity": 0.5,
                    "line": {"width": 0},
                    "layer": "below",
                }
            )
        sub = long[long["quantity"] == q]
        for label, g in sub.groupby("checkpoint", sort=False):
            g = g.set_index("size").reindex([s for s in sizes if s in set(g["size"])])
            plus, minus = error_bars(g["value"], g["lo"], g["hi"])
            traces.append(
                go.Scatter(
                    x=list(g.index),
                    y=_nan_to_none(g["value"]),
                    name=str(label),
                    legendgroup=str(label),
                    showlegend=col == 1,
                    mode="lines+markers",
                    line=dict(color=colours[label], width=2),
                    xaxis=f"x{sfx}",
                    yaxis=f"y{sfx}",
                    error_y=dict(type="data", symmetric=False, array=plus, arrayminus=minus, thickness=1.5),
                    customdata=list(zip(g["k"].astype(object), g["of"].astype(object), g["source"])),
                    hovertemplate=(
                        f"<b>{label}</b> %{{x}}<br>{NAMES[q]}"
                        " = %{y:.0%} (%{customdata[0]}/%{customdata[1]})"
                        "<br>source: %{customdata[2]}<extra></extra>"
                    ),
                )
            )
    if train:
        layout["annotations"].append(
            {
                "text": "training sizes",
                "x": min(train) - 0.5,
                "y": 1.0,
                "xref": "x",
                "yref": "y domain",
                "xanchor": "left",
                "yanchor": "top",
                "showarrow": False,
                "font": {"size": 10, "color": "#6b7280"},
            }
        )
    return go.Figure(data=traces, layout=layout)


LABEL_SPOTS = (("top center", 0, 1), ("bottom center", 0, -1), ("middle right", 1, 0), ("middle left", -1, 0))
LABEL_GAP = 0.06  # points closer than this (in accuracy units) would print their labels on each other


def _label_positions(xs, ys, placed: list) -> list[str]:
    """A text position per point, the first of LABEL_SPOTS whose label anchor is not within
    LABEL_GAP of one already placed (`placed` is updated): nearby points label to different sides."""
    out = []
    for x, y in zip(xs, ys):
        if x is None or y is None:
            out.append("top center")
            continue
        spots = [(pos, x + dx * LABEL_GAP / 2, y + dy * LABEL_GAP / 2) for pos, dx, dy in LABEL_SPOTS]
        free = (
            s for s in spots if all(abs(s[1] - px) >= LABEL_GAP or abs(s[2] - py) >= LABEL_GAP / 2 for px, py in placed)
        )
        pos, ax, ay = next(free, spots[-1])
        placed.append((ax, ay))
        out.append(pos)
    return out


def predicted_observed_figure(po: pd.DataFrame) -> go.Figure:
    """Figure 3: predicted (y) vs observed (x) accuracy per (checkpoint, size), bootstrap 95%
    error bars on both, the y = x line. Filled markers: training sizes; open: out of distribution.
    `po` is ui.services.calibration_views.predicted_observed(frame)."""
    title = "Predicted vs observed accuracy (bootstrap 95% intervals)"
    pts = po.dropna(subset=["predicted", "observed"]) if len(po) else po
    if not len(pts):
        return empty_figure(title, "no cells with a defined prediction yet")
    colours = colour_map(po["checkpoint"])
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=[0, 1], y=[0, 1], mode="lines", name="y = x", line=dict(color="#9ca3af", dash="dot"), hoverinfo="skip"
        )
    )
    placed: list[tuple[float, float]] = []  # label anchors so far (points of every checkpoint)
    for label, g in pts.groupby("checkpoint", sort=False):
        xp, xm = error_bars(g["observed"], g["observed_lo"], g["observed_hi"])
        yp, ym = error_bars(g["predicted"], g["predicted_lo"], g["predicted_hi"])
        symbols = ["circle" if d else "circle-open" for d in g["in_distribution"]]
        obs, pred = _nan_to_none(g["observed"]), _nan_to_none(g["predicted"])
        fig.add_trace(
            go.Scatter(
                x=obs,
                y=pred,
                name=str(label),
                mode="markers+text",
                text=list(g["size"]),
                textposition=_label_positions(obs, pred, placed),
                textfont=dict(size=10, color=colours[label]),
                marker=dict(color=colours[label], size=10, symbol=symbols, line=dict(width=2, color=colours[label])),
                error_x=dict(type="data", symmetric=False, array=xp, arrayminus=xm, thickness=1),
                error_y=dict(type="data", symmetric=False, array=yp, arrayminus=ym, thickness=1),
                customdata=list(g["source"]),
                hovertemplate=(
                    f"<b>{label}</b> %{{text}}<br>observed %{{x:.0%}}<br>predicted %{{y:.0%}}"
                    "<br>source: %{customdata}<extra></extra>"
                ),
            )
        )
    # constrain="domain": the square aspect shrinks the plot area instead of widening the range
    # (which otherwise ran from -50 % to 150 %)
    fig.update_xaxes(
        title_text="observed accuracy", tickformat=".0%", range=[-0.04, 1.06], constrain="domain", dtick=0.2
    )
    fig.update_yaxes(
        title_text="predicted accuracy",
        tickformat=".0%",
        range=[-0.04, 1.06],
        scaleanchor="x",
        scaleratio=1,
        constrain="domain",
        dtick=0.2,
    )
    fig.update_layout(
        title=title, height=520, margin=dict(t=60, r=10), legend_title_text="filled: training sizes · open: OOD"
    )
    return fig
