"""Chart of the test-set verdict comparison (ds_core.analysis.verdicts.verdict_summary): per model,
p(STOP | wrong attempt) and p(RESAMPLE | correct attempt) with their 95% bootstrap intervals."""

from __future__ import annotations

import math

import pandas as pd
import plotly.graph_objects as go

from ui.tokens import ROLE_COLOURS

MEASURES = (("p(STOP | wrong attempt)", "#b91c1c"), ("p(RESAMPLE | correct attempt)", ROLE_COLOURS["decision"]))


def _num(x) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def verdict_figure(summary: pd.DataFrame, source: str) -> go.Figure:
    fig = go.Figure()
    title = f"Verdict errors of every model on {source}'s episodes (95% bootstrap over episodes)"
    if not len(summary):
        fig.add_annotation(text="no decision points", showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
        fig.update_layout(title=title, xaxis_visible=False, yaxis_visible=False, height=300)
        return fig
    x = summary["model"].astype(str).tolist()
    for name, colour in MEASURES:
        v = [_num(a) for a in summary[name]]
        lo = [_num(a) for a in summary[f"{name} lo"]]
        hi = [_num(a) for a in summary[f"{name} hi"]]
        fig.add_trace(
            go.Bar(
                x=x,
                y=v,
                name=name,
                marker_color=colour,
                error_y=dict(
                    type="data",
                    symmetric=False,
                    array=[None if a is None or h is None else h - a for a, h in zip(v, hi)],
                    arrayminus=[None if a is None or m is None else a - m for a, m in zip(v, lo)],
                ),
                hovertemplate="%{x}: %{y:.1%}<extra>" + name + "</extra>",
            )
        )
    fig.update_yaxes(range=[0, 1], tickformat=".0%", title_text="mean verdict probability")
    fig.update_xaxes(automargin=True)
    fig.update_layout(title=title, barmode="group", height=380, legend=dict(orientation="h", y=-0.2))
    return fig
