"""Charts of the Training dynamics page: one metric over training steps, conditions overlaid,
seeds as a band (min to max over seeds, the mean as the line) or as one line each. Input: the
frames of ds_core.analysis.lab_dynamics (no Streamlit)."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from ds_core.analysis.lab_dynamics import LOG_SCALE, METRICS
from ui.charts.axes import finite_values, log_axis
from ui.charts.calibration import colour_map


def _rgba(hex_colour: str, alpha: float) -> str:
    h = hex_colour.lstrip("#")
    r, g, b = (int(h[i : i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


def dynamics_figure(
    bands: pd.DataFrame, runs: pd.DataFrame, metric: str, conditions, per_seed: bool = False, title: str = ""
) -> go.Figure:
    """`metric` over steps for `conditions`: the seeds' mean with a min-max band, or each seed."""
    fig = go.Figure()
    colours = colour_map(conditions)
    log = metric in LOG_SCALE
    values = []
    for cond in conditions:
        c = colours[cond]
        if per_seed:
            sub = runs[(runs.condition == cond) & (runs.metric == metric)]
            for seed, g in sub.groupby("seed"):
                g = g.sort_values("step")
                values += list(g.value)
                fig.add_trace(
                    go.Scatter(
                        x=g.step,
                        y=finite_values(g.value, positive=log),
                        mode="lines+markers",
                        name=f"{cond} · seed {seed}",
                        line={"color": c, "dash": ("solid", "dash", "dot")[seed % 3]},
                        legendgroup=cond,
                    )
                )
            continue
        b = bands[(bands.condition == cond) & (bands.metric == metric)].sort_values("step")
        if b.empty:
            continue
        values += list(b["min"]) + list(b["max"])
        fig.add_trace(
            go.Scatter(
                x=list(b.step) + list(b.step)[::-1],
                y=finite_values(list(b["max"]) + list(b["min"])[::-1], positive=log),
                mode="lines",
                fill="toself",
                fillcolor=_rgba(c, 0.18),
                line={"width": 0},
                hoverinfo="skip",
                showlegend=False,
                legendgroup=cond,
            )
        )
        seeds = int(b.seeds.max())
        fig.add_trace(
            go.Scatter(
                x=b.step,
                y=finite_values(b["mean"], positive=log),
                mode="lines+markers",
                name=f"{cond} (mean of {seeds} seed{'s' * (seeds > 1)})",
                line={"color": c},
                legendgroup=cond,
                customdata=list(zip(b["min"], b["max"])),
                hovertemplate="step %{x}<br>mean %{y:.4g}<br>seeds from %{customdata[0]:.4g} to %{customdata[1]:.4g}",
            )
        )
    label = METRICS.get(metric, metric)
    fig.update_layout(
        title=title or label,
        xaxis_title="training step",
        yaxis_title=label,
        height=380,
        margin={"t": 50, "b": 40},
        legend={"orientation": "h", "y": -0.25},
    )
    if log:
        fig.update_yaxes(**log_axis(values))
    elif metric.startswith("eval_"):
        fig.update_yaxes(range=[-0.02, 1.02], tickformat=".0%")
    return fig
