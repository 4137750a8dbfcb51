"""What the charts share: log axes labelled 10^k at the decades only (plotly's default reads "1n, 1μ,
1B, 1T" and labels 2s and 5s between decades, no more than about eight labels here), and the
values a bar can draw (`finite_values`)."""

from __future__ import annotations

import math


def log_axis(values=None, max_labels: int = 8) -> dict:
    """Keyword settings for fig.update_xaxes / update_yaxes: a log axis with ticks at every decade
    (every k-th decade when `values` span more than `max_labels` of them), labelled 10^k."""
    step = 1
    if values is not None:
        xs = []
        for v in values:
            try:
                x = float(v)
            except (TypeError, ValueError):
                continue
            if math.isfinite(x) and x > 0:
                xs.append(x)
        if xs:
            span = math.ceil(math.log10(max(xs))) - math.floor(math.log10(min(xs)))
            step = max(1, math.ceil(span / max_labels))
    return {"type": "log", "dtick": step, "exponentformat": "power", "showexponent": "all", "minor_showgrid": False}


def finite_values(values, positive: bool = False) -> list:
    """Floats with inf/nan (and, for log axes, values <= 0) replaced by None (a gap)."""
    out = []
    for v in values:
        try:
            x = float(v)
        except (TypeError, ValueError):
            out.append(None)
            continue
        out.append(x if math.isfinite(x) and (x > 0 or not positive) else None)
    return out
