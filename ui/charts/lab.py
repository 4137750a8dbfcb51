"""The Calibration page's DS-lab chart: one figure (accuracy, p_s, p_d|C or p_d|W) against the
test size per lab condition, the mean over seeds with the across-seed range as error bars, or each
seed as its own line. Input: the frames of ui.services.calibration_lab (no Streamlit)."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from ds_core.episodes.tasks import TEST_SET_SIZES
from ui.charts.calibration import colour_map
from ui.services.calibration_lab import FIGURE_LABELS


def lab_figure(frame: pd.DataFrame, agg: pd.DataFrame, figure: str, conditions, per_seed: bool) -> go.Figure:
    fig = go.Figure()
    colours = colour_map(conditions)
    sizes = list(TEST_SET_SIZES)
    for cond in conditions:
        if per_seed:
            sub = frame[(frame.condition == cond) & (frame.figure == figure)]
            for seed, g in sub.groupby("seed"):
                g = g.set_index("size").reindex(sizes)
                fig.add_trace(
                    go.Scatter(
                        x=sizes,
                        y=g.value,
                        mode="lines+markers",
                        name=f"{cond} · seed {seed}",
                        line={"color": colours[cond], "dash": ("solid", "dash", "dot")[int(seed) % 3]},
                        legendgroup=cond,
                    )
                )
            continue
        a = agg[(agg.condition == cond) & (agg.figure == figure)].set_index("size").reindex(sizes)
        fig.add_trace(
            go.Scatter(
                x=sizes,
                y=a["mean"],
                mode="lines+markers",
                name=cond,
                line={"color": colours[cond]},
                error_y={
                    "type": "data",
                    "symmetric": False,
                    "array": (a["highest seed"] - a["mean"]).tolist(),
                    "arrayminus": (a["mean"] - a["lowest seed"]).tolist(),
                },
            )
        )
    fig.add_vrect(x0=-0.5, x1=1.5, fillcolor="#9ca3af", opacity=0.12, line_width=0)
    fig.update_layout(
        title=f"{FIGURE_LABELS[figure]} by size, DS lab"
        + (" (each seed)" if per_seed else " (mean over seeds, bars: the seeds' range)"),
        xaxis_title="problem size (shaded: training sizes)",
        yaxis_title=FIGURE_LABELS[figure],
        height=420,
        legend={"orientation": "h", "y": -0.25},
        margin={"t": 50},
    )
    fig.update_yaxes(range=[-0.02, 1.02], tickformat=".0%")
    return fig
