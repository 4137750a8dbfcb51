"""Charts of the checkpoint comparison: plain functions DataFrame -> plotly Figure.

Inputs are the frames of ui.services.compare_teacher_forcing (TeacherForced.tokens/.roles/.decisions,
cross_likelihood(...)) and ui.services.compare_attribution (AttributionComparison.figures/.tokens).
"""

from __future__ import annotations

import math

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ui.charts.axes import log_axis
from ui.tokens import ROLE_COLOURS

PALETTE = ("#0f766e", "#b91c1c", "#7c3aed", "#ca8a04", "#2563eb", "#db2777", "#65a30d", "#475569")
ROLE_ORDER = ("prompt", "sampling", "decision", "other")


def checkpoint_colours(labels) -> dict[str, str]:
    return {lab: PALETTE[i % len(PALETTE)] for i, lab in enumerate(labels)}


def _empty(title: str, msg: str) -> go.Figure:
    fig = go.Figure()
    fig.add_annotation(text=msg, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    fig.update_layout(title=title, xaxis_visible=False, yaxis_visible=False, height=220)
    return fig


def _role_bars(
    tokens: pd.DataFrame, source: str, value: str, ylabel: str, title: str, hover_cols: tuple[str, ...]
) -> go.Figure:
    """One row of bars over positions per checkpoint other than `source`, coloured by role."""
    others = [c for c in dict.fromkeys(tokens["checkpoint"]) if c != source] if len(tokens) else []
    if not others:
        return _empty(title, "nothing to compare: pick a second checkpoint")
    fig = make_subplots(
        rows=len(others),
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.06,
        subplot_titles=[f"{o} − {source}" for o in others],
    )
    for i, other in enumerate(others, start=1):
        f = tokens[tokens["checkpoint"] == other]
        for role in ROLE_ORDER:
            g = f[f["role"] == role]
            if not len(g):
                continue
            custom = g[["token", *hover_cols]].to_numpy()
            hover = (
                "pos %{x} %{customdata[0]}<br>"
                + ylabel
                + " %{y:.4g}"
                + "".join(f"<br>{c} %{{customdata[{j}]:.4g}}" for j, c in enumerate(hover_cols, start=1))
            )
            # explicit width: plotly sizes a trace's bars by its own x spacing, so a role with two
            # far-apart tokens (the decisions) would otherwise draw two bars as wide as the chart
            fig.add_trace(
                go.Bar(
                    x=g["pos"],
                    y=g[value],
                    width=0.9,
                    name=role,
                    legendgroup=role,
                    showlegend=i == 1,
                    marker_color=ROLE_COLOURS.get(role, "#111827"),
                    customdata=custom,
                    hovertemplate=hover + f"<extra>{role}</extra>",
                ),
                row=i,
                col=1,
            )
        fig.update_yaxes(title_text=ylabel, row=i, col=1)
    fig.update_xaxes(title_text="token position", row=len(others), col=1)
    fig.update_layout(
        title=title,
        barmode="overlay",
        bargap=0.1,
        height=160 + 200 * len(others),
        legend_title_text="role",
        margin=dict(t=80),
    )
    return fig


def delta_chart(tokens: pd.DataFrame, source: str, include_prompt: bool = True) -> go.Figure:
    """Per-token delta log-prob (model − transcript's model) over positions, coloured by role;
    without the prompt's tokens when `include_prompt` is False."""
    if not include_prompt and len(tokens):
        tokens = tokens[tokens["role"] != "prompt"]
    return _role_bars(tokens, source, "delta", "Δ log p", f"Per-token Δ log-prob on {source}'s transcript", ("logp",))


def role_delta_chart(roles: pd.DataFrame, source: str) -> go.Figure:
    """Mean Δ log-prob per role (sampling, decision, all generated) for each other checkpoint."""
    title = f"Mean Δ log-prob by role on {source}'s transcript"
    f = roles[(roles["checkpoint"] != source) & roles["role"].isin(["sampling", "decision", "generated"])]
    if not len(f):
        return _empty(title, "nothing to compare")
    colours = checkpoint_colours(dict.fromkeys(roles["checkpoint"]))
    fig = go.Figure()
    for ck in dict.fromkeys(f["checkpoint"]):
        g = f[f["checkpoint"] == ck]
        fig.add_trace(
            go.Bar(
                x=g["role"],
                y=g["mean_delta"],
                name=ck,
                marker_color=colours[ck],
                customdata=g[["n", "mean_logp"]].to_numpy(),
                hovertemplate="%{x}: mean Δ %{y:.4g}<br>n %{customdata[0]}, "
                "mean log p %{customdata[1]:.4g}<extra>" + ck + "</extra>",
            )
        )
    fig.add_hline(y=0, line_color="#6b7280", line_width=1)
    fig.update_layout(
        title=title,
        barmode="group",
        yaxis_title=f"mean Δ log p vs {source}",
        xaxis_title="tokens",
        legend_title_text="checkpoint",
        height=380,
    )
    return fig


def decision_chart(decisions: pd.DataFrame) -> go.Figure:
    """p(STOP) and p(RESAMPLE) each checkpoint gives at each decision position of the transcript."""
    title = "Decision-token probabilities at each decision position"
    if not len(decisions) or decisions[["p_STOP", "p_RESAMPLE"]].isna().all().all():
        return _empty(title, "no [STOP]/[RESAMPLE] decision positions in this transcript")
    d = decisions.copy()
    d["where"] = [f"after attempt {k} @{p} ({v})" for k, p, v in zip(d["after attempt"], d["pos"], d["verdict"])]
    colours = checkpoint_colours(dict.fromkeys(d["checkpoint"]))
    fig = make_subplots(rows=1, cols=2, subplot_titles=["p([STOP])", "p([RESAMPLE])"], shared_yaxes=True)
    for j, col in enumerate(("p_STOP", "p_RESAMPLE"), start=1):
        for ck in dict.fromkeys(d["checkpoint"]):
            g = d[d["checkpoint"] == ck]
            fig.add_trace(
                go.Bar(
                    x=g["where"],
                    y=g[col],
                    name=ck,
                    legendgroup=ck,
                    showlegend=j == 1,
                    marker_color=colours[ck],
                    hovertemplate="%{x}<br>" + col.replace("_", "(") + ") %{y:.4f}<extra>" + ck + "</extra>",
                ),
                row=1,
                col=j,
            )
    fig.update_yaxes(range=[0, 1.02], title_text="probability", row=1, col=1)
    fig.update_xaxes(title_text="decision (position, verdict in the transcript)")
    fig.update_layout(title=title, barmode="group", legend_title_text="checkpoint", height=400)
    return fig


def cross_chart(cross: pd.DataFrame, role: str = "generated") -> go.Figure:
    """Heatmap: mean log-prob of each model (columns) on each checkpoint's transcript (rows)."""
    title = f"Mean log-prob per {role} token: every model on every transcript"
    f = cross[cross["role"] == role]
    if not len(f):
        return _empty(title, "no transcripts")
    m = f.pivot(index="transcript", columns="checkpoint", values="mean_logp")
    order = list(dict.fromkeys(f["transcript"]))
    m = m.reindex(index=order, columns=list(dict.fromkeys(f["checkpoint"])))
    text = [[("n/a" if (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}") for v in row] for row in m.to_numpy()]
    fig = go.Figure(
        go.Heatmap(
            z=m.to_numpy(),
            x=list(m.columns),
            y=list(m.index),
            text=text,
            texttemplate="%{text}",
            colorscale="Viridis",
            colorbar_title="mean log p",
            hovertemplate="model %{x} on %{y}'s transcript: %{z:.4f}<extra></extra>",
        )
    )
    fig.update_layout(
        title=title,
        xaxis_title="model scoring",
        yaxis_title="transcript sampled by",
        yaxis_autorange="reversed",
        height=120 + 60 * len(order),
    )
    return fig


def attribution_figures_chart(figures: pd.DataFrame, objective: str) -> go.Figure:
    """Side by side per checkpoint: |G_S| and |G_D| (log scale), |G_S|/|G_D| (log), cos(G_S, G_D)."""
    title = f"Decision vs sampling gradient figures ({objective})"
    f = figures[figures["norm_G"].notna()] if len(figures) else figures
    if not len(f):
        return _empty(title, "no checkpoint could be attributed")
    fig = make_subplots(rows=1, cols=3, subplot_titles=["|G_S| and |G_D|", "ratio |G_S| / |G_D|", "cos(G_S, G_D)"])
    x = list(f["checkpoint"])
    fig.add_trace(
        go.Bar(
            x=x,
            y=f["norm_G_S"],
            name="|G_S| (sampling)",
            marker_color=ROLE_COLOURS["sampling"],
            hovertemplate="%{x}: |G_S| %{y:.4g}<extra></extra>",
        ),
        row=1,
        col=1,
    )
    fig.add_trace(
        go.Bar(
            x=x,
            y=f["norm_G_D"],
            name="|G_D| (decision)",
            marker_color=ROLE_COLOURS["decision"],
            hovertemplate="%{x}: |G_D| %{y:.4g}<extra></extra>",
        ),
        row=1,
        col=1,
    )
    ratio = f["ratio_SD"].replace([float("inf"), float("-inf")], float("nan"))
    fig.add_trace(
        go.Bar(
            x=x,
            y=ratio,
            name="|G_S|/|G_D|",
            marker_color="#475569",
            hovertemplate="%{x}: ratio %{y:.4g}<extra></extra>",
        ),
        row=1,
        col=2,
    )
    fig.add_trace(
        go.Bar(
            x=x,
            y=f["cos_SD"],
            name="cos(G_S, G_D)",
            marker_color="#0f766e",
            hovertemplate="%{x}: cos %{y:.4f}<extra></extra>",
        ),
        row=1,
        col=3,
    )
    fig.update_yaxes(**log_axis([*f["norm_G_S"], *f["norm_G_D"]]), row=1, col=1)
    fig.update_yaxes(**log_axis(ratio), row=1, col=2)
    fig.update_xaxes(automargin=True)
    fig.add_hline(y=1, line_dash="dot", line_color="#6b7280", row=1, col=2)
    fig.update_yaxes(range=[-1, 1], row=1, col=3)
    fig.update_layout(title=title, barmode="group", height=400, legend_title_text="")
    return fig


def share_diff_chart(tokens: pd.DataFrame, source: str, objective: str) -> go.Figure:
    """Per-token share difference s_t(model) − s_t(transcript's model) over positions, by role."""
    f = tokens[tokens["share_diff"].notna()] if len(tokens) else tokens
    return _role_bars(
        f,
        source,
        "share_diff",
        "Δ share",
        f"Per-token gradient share difference ({objective}) on {source}'s transcript",
        ("share",),
    )
