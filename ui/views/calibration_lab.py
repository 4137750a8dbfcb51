"""The Calibration page's DS-lab section (ui.services.calibration_lab, ui.charts.lab): every lab
condition grouped, seeds aggregated or one by one, from the committed eval.json files."""

from __future__ import annotations

import streamlit as st

from ds_core.training.lab_index import CONDITION_ORDER
from ui.charts.lab import lab_figure
from ui.common import chart, table, user_errors
from ui.services.calibration_lab import FIGURE_LABELS, aggregate, lab_frame

DEFAULT = ("sft_reflection", "reflection_balanced", "rl", "rl_sampling_only")


@st.cache_data(show_spinner=False, ttl=60)
def _frame(root: str):
    return lab_frame(root)


def lab_section(root) -> None:
    st.subheader("DS lab: every condition, 3 seeds (Table 1 and Figure 2 with seeds)")
    st.caption(
        "The lab's runs (`python -m ds_core train lab`) on the fixed test sets (n = 100 a size, "
        "temperature 1), read from each seed's committed eval.json: nothing is sampled here. "
        "Seed 0 of each condition is also in the checkpoint pickers above (as lab/…)."
    )
    frame = None
    with user_errors("Cannot read the lab's evaluations"):
        frame = _frame(str(root))
    if frame is None:
        return
    if frame.empty:
        st.info(f"No lab runs under {root}: `python -m ds_core train lab` trains them.")
        return
    have = [c for c in CONDITION_ORDER if c in set(frame.condition)]
    c1, c2, c3 = st.columns([3, 1, 1])
    conds = c1.multiselect(
        "Lab conditions", have, default=[c for c in DEFAULT if c in have] or have[:3], key="lab_conds"
    )
    figure = c2.selectbox("Figure", list(FIGURE_LABELS), format_func=FIGURE_LABELS.get, key="lab_figure")
    per_seed = c3.radio("Seeds", ["aggregated", "one by one"], key="lab_seeds") == "one by one"
    if not conds:
        st.caption("Choose at least one condition.")
        return
    agg = aggregate(frame)
    chart(lab_figure(frame, agg, figure, conds, per_seed), f"lab {figure}", key="lab_chart")
    if per_seed:
        view = frame[frame.condition.isin(conds) & (frame.figure == figure)]
    else:
        view = agg[agg.condition.isin(conds) & (agg.figure == figure)]
    table(view, f"lab calibration {figure}", key="lab_table")
