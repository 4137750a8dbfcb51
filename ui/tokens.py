"""Episode text as HTML: every token coloured by role and shaded by a per-token value, with a
hover tooltip of its numbers. Used by the episode explorer and the checkpoint comparison."""

from __future__ import annotations

import html
import math

import pandas as pd

ROLE_COLOURS = {"prompt": "#6b7280", "sampling": "#1d4ed8", "decision": "#c2410c", "other": "#6b21a8"}
POS_RGB, NEG_RGB = (220, 38, 38), (37, 99, 235)  # shading: red for positive, blue for negative


def _fmt(v) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "n/a"
        return f"{v:.4g}"
    return str(v)


def _display(tok: str) -> str:
    if tok.startswith("[") and tok.endswith("]") or tok.startswith("<") and tok.endswith(">"):
        return tok
    return tok.replace(" ", "\u00a0").replace("\n", "\u21b5")


def token_html(
    df: pd.DataFrame,
    value: str | None = None,
    hover: list[str] | tuple[str, ...] = (),
    *,
    signed: bool = True,
    highlight: int | None = None,
    scale: float | None = None,
) -> str:
    """HTML for one episode. `df` needs columns `token` and `role` (one row per token, in order);
    `value` names a column shaded by |value| / scale (red >0, blue <0; `signed=False` shades every
    value red); `hover` the columns shown in each token's tooltip; `highlight` a row index to box.
    """
    vals = None
    if value is not None and value in df:
        vals = pd.to_numeric(df[value], errors="coerce").astype(float)
        finite = vals[vals.map(math.isfinite)].abs()
        scale = scale or (float(finite.max()) if len(finite) and finite.max() > 0 else 1.0)
    parts = [
        '<div class="ds-episode" style="font-family:monospace;line-height:2.1;font-size:0.95rem;word-break:break-all">'
    ]
    for i, row in enumerate(df.itertuples(index=False)):
        r = row._asdict()
        role = str(r.get("role", "other"))
        colour = ROLE_COLOURS.get(role, "#111827")
        bg = "transparent"
        if vals is not None:
            v = vals.iloc[i]
            if math.isfinite(v):
                a = min(1.0, abs(v) / scale) * 0.85
                rgb = POS_RGB if (v >= 0 or not signed) else NEG_RGB
                bg = f"rgba({rgb[0]},{rgb[1]},{rgb[2]},{a:.3f})"
        tip = [f"#{i} {r['token']!r} ({role})"] + [f"{c}: {_fmt(r[c])}" for c in hover if c in r]
        border = f"2px solid {colour}"
        box = ";outline:2px solid #111827" if highlight == i else ""
        weight = "font-weight:700;" if role == "decision" else ""
        parts.append(
            f'<span title="{html.escape(chr(10).join(tip))}" data-pos="{i}" '
            f'style="color:{colour};background:{bg};border-bottom:{border};{weight}'
            f'padding:1px 0{box}">{html.escape(_display(str(r["token"])))}</span>'
        )
    parts.append("</div>")
    return "".join(parts)


def legend_html(scale_note: str = "|value| relative to the largest in the episode") -> str:
    items = "".join(
        f'<span style="color:{c};border-bottom:2px solid {c};margin-right:1em">{r}</span>'
        for r, c in ROLE_COLOURS.items()
    )
    return (
        f'<div style="font-size:0.85rem">role: {items} &nbsp; shading: '
        f'<span style="background:rgba(220,38,38,0.6)">&nbsp;positive&nbsp;</span> '
        f'<span style="background:rgba(37,99,235,0.6)">&nbsp;negative&nbsp;</span> '
        f"({html.escape(scale_note)})</div>"
    )
