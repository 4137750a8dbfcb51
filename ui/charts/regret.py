"""The Calibration page's decision-regret chart: DataFrame (ui.services.calibration_regret) -> plotly.

Left: each checkpoint's own accuracy (solid) and the accuracy of the Q-optimal verdicts on the same
attempts (dashed) vs size; the gap is the regret. Right: the regret with its bootstrap interval.
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ui.charts.calibration import colour_map, empty_figure, error_bars, size_axis


def regret_figure(frame: pd.DataFrame, sizes) -> go.Figure:
    have = frame[frame["source"] != "missing"] if len(frame) else frame
    if not len(have):
        return empty_figure("Decision regret", "No decision regret computed for these checkpoints and settings.")
    colours = colour_map(have["checkpoint"])
    fig = make_subplots(
        rows=1, cols=2, subplot_titles=("own vs Q-optimal accuracy", "regret = optimal - own"), horizontal_spacing=0.1
    )
    for name, g in have.groupby("checkpoint", sort=False):
        c = colours[name]
        for part, dash, col in (("own", "solid", 1), ("optimal", "dash", 1), ("regret", "solid", 2)):
            plus, minus = error_bars(g[part], g[f"{part}_lo"], g[f"{part}_hi"])
            fig.add_trace(
                go.Scatter(
                    x=g["size"],
                    y=g[part] * 100,
                    mode="lines+markers",
                    name=f"{name} {part}",
                    legendgroup=name,
                    showlegend=part != "regret",
                    line={"color": c, "dash": dash},
                    error_y={
                        "type": "data",
                        "array": [None if v is None else v * 100 for v in plus],
                        "arrayminus": [None if v is None else v * 100 for v in minus],
                        "visible": True,
                    },
                    hovertemplate=f"{name} {part} %{{x}}: %{{y:.1f}}%<extra></extra>",
                ),
                row=1,
                col=col,
            )
    for col in (1, 2):
        size_axis(fig, sizes, row=1, col=col)
        fig.update_yaxes(title_text="%", row=1, col=col)
    fig.update_layout(height=420, legend={"orientation": "h", "y": -0.2})
    return fig
