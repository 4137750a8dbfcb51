"""Charts of the GRPO group view (ui.services.group_view): plain functions DataFrame -> Figure.

`group_ratio_figure(figures)`: the group gradient's |G_S|/|G_D| and decision share per objective.
`group_contributions_figure(episodes, objective_short)`: each episode's contribution to the group's
gradient from its sampling and its decision tokens, for one objective, labelled by outcome and A.
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ui.charts.axes import finite_values as _clean
from ui.charts.axes import log_axis
from ui.tokens import ROLE_COLOURS


def _empty(title: str, msg: str) -> go.Figure:
    fig = go.Figure()
    fig.add_annotation(text=msg, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    fig.update_layout(title=title, xaxis_visible=False, yaxis_visible=False, height=300)
    return fig


def group_ratio_figure(figures: pd.DataFrame) -> go.Figure:
    title = "The group's gradient per objective"
    f = figures[figures["|G|"] > 0] if len(figures) else figures
    if not len(f) or "|G_S|/|G_D|" not in f:
        return _empty(title, "no objective has a non-zero gradient on this group")
    x = f["objective"].astype(str).tolist()
    fig = make_subplots(rows=1, cols=2, subplot_titles=("|G_S| / |G_D| over the group", "shares of |G|² (add to 1)"))
    ratio = f["|G_S|/|G_D|"]
    fig.add_trace(
        go.Bar(x=x, y=_clean(ratio, True), name="|G_S|/|G_D|", marker_color="#0f766e", showlegend=False), 1, 1
    )
    for col, role in (("share S", "sampling"), ("share D", "decision")):
        fig.add_trace(go.Bar(x=x, y=_clean(f[col]), name=role, marker_color=ROLE_COLOURS[role]), 1, 2)
    fig.add_hline(y=1, line_dash="dot", line_color="#6b7280", row=1, col=1)
    fig.update_yaxes(**log_axis(ratio), row=1, col=1)
    fig.update_xaxes(automargin=True)
    fig.update_layout(title=title, barmode="group", height=380, legend=dict(orientation="h", y=-0.2))
    return fig


def group_contributions_figure(episodes: pd.DataFrame, objective: str) -> go.Figure:
    """Bars per episode: its sampling and decision tokens' contributions <G_{i,k}, G>/|G|²."""
    title = f"Each episode's contribution to the group's {objective} gradient"
    s_col, d_col = f"{objective}: S", f"{objective}: D"
    if not len(episodes) or s_col not in episodes:
        return _empty(title, f"{objective} was not computed on this group")
    x = [f"#{int(r['episode'])} {'✓' if r['correct'] else '✗'} A={float(r['A']):+.2f}" for _, r in episodes.iterrows()]
    fig = go.Figure()
    for col, role in ((s_col, "sampling"), (d_col, "decision")):
        fig.add_trace(
            go.Bar(
                x=x,
                y=_clean(episodes[col]),
                name=f"{role} tokens",
                marker_color=ROLE_COLOURS[role],
                hovertemplate="%{x}: %{y:.4g}<extra>" + role + "</extra>",
            )
        )
    fig.update_xaxes(automargin=True, title_text="episode (✓ correct, ✗ wrong; its advantage A)")
    fig.update_yaxes(title_text="share of |G|²")
    fig.update_layout(
        title=title,
        barmode="group",
        height=380,
        legend=dict(orientation="h", y=1.02, x=1, xanchor="right", yanchor="bottom"),
        margin=dict(t=80),
    )
    return fig
