"""The GRPO group view, drawn on the Episode explorer and the Gradient balance page: what the numbers
say (ui.services.group_view.reading), the group gradient per objective, each episode's contribution.
The work is ui.services.group_view's; results are kept in the session under their request key, so
a rerun of the page (any widget) does not recompute them."""

from __future__ import annotations

import time

import streamlit as st

from ds_core.objectives import LABELS, OBJECTIVES
from ui.charts.group import group_contributions_figure, group_ratio_figure
from ui.common import chart, table, user_errors
from ui.services.group_view import (
    GROUP_OBJECTIVES,
    attribute_group_objectives,
    group_episodes_frame,
    group_figures_frame,
    reading,
)

RESULTS = "group_view_results"  # session state: request key -> (GroupView, seconds)
KEEP = 8  # results kept per session


def compute(key: tuple, ckpt, episodes_fn, ref, parameters: str):
    """The GroupView for `key` (from the session, else computed with a progress bar): `episodes_fn()`
    samples the group, `ref` is the KL reference (a Checkpoint or None)."""
    kept = st.session_state.setdefault(RESULTS, {})
    if key in kept:
        return kept[key]
    bar = st.progress(0.0, text="Sampling the group…")
    t0 = time.perf_counter()
    episodes = episodes_fn()

    def tick(done: float, total: int, objective: str):
        bar.progress(min(done / max(total, 1), 1.0), text=f"Attributing {LABELS[objective]} over the group…")

    view = attribute_group_objectives(ckpt, episodes, GROUP_OBJECTIVES, ref=ref, parameters=parameters, progress=tick)
    bar.empty()
    kept[key] = (view, time.perf_counter() - t0)
    while len(kept) > KEEP:
        kept.pop(next(iter(kept)))
    return kept[key]


def render(view, seconds: float, prefix: str) -> None:
    """Draw one GroupView (widget keys start with `prefix`)."""
    n = len(view.episodes)
    k = sum(bool(e.correct) for e in view.episodes)
    st.caption(f"A group of {n} episodes, {k} correct; sampled and attributed in {seconds:.1f} s on this machine.")
    for line in reading(view):
        st.markdown("- " + line)
    for o, why in view.skipped.items():
        st.caption(f"{LABELS[o]} not computed: {why}.")
    figs = group_figures_frame(view)
    chart(group_ratio_figure(figs), "group gradient per objective", key=f"{prefix}_chart_group_ratio")
    table(figs, "group gradient figures", key=f"{prefix}_dl_group_figs")
    eps = group_episodes_frame(view)
    have = [o for o in view.results if view.results[o].figures is not None]
    if have:
        o = st.selectbox(
            "Contributions to the group gradient of",
            have,
            format_func=lambda x: LABELS[x],
            key=f"{prefix}_group_obj",
            help="each episode's <G_{i,k}, G>/|G|² for its sampling (k = S) and decision (k = D) tokens; "
            "over every episode and role they add to 1",
        )
        chart(group_contributions_figure(eps, OBJECTIVES[o].short), "group contributions", key=f"{prefix}_chart_gc")
    table(eps, "group episodes", key=f"{prefix}_dl_group_eps")


def section(key: tuple, ckpt, episodes_fn, ref, parameters: str, prefix: str, intro: str) -> None:
    """The whole view behind a toggle (the group costs one backward pass per episode, role and objective)."""
    st.markdown(intro)
    if not st.toggle("Compute the group view", key=f"{prefix}_group_on"):
        return
    with user_errors("Cannot attribute the group"):
        view, seconds = compute(key, ckpt, episodes_fn, ref, parameters)
        render(view, seconds, prefix)
