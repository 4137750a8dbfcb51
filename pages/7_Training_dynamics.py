"""Training dynamics: the DS lab's runs over their training steps — held-out p_s, p_d|C, p_d|W and
the split of the gradient each step applied — conditions overlaid, seeds as bands or one by one
(ds_core.analysis.lab_dynamics reads the logs; ui.charts.dynamics draws). Pages only draw."""

from __future__ import annotations

import streamlit as st

from ds_core.analysis.lab_dynamics import HELDOUT, METRICS, SPLIT, conditions_of, read_logs
from ds_core.training.lab_index import LAB_DIR
from ui.charts.dynamics import dynamics_figure
from ui.common import chart, table, user_errors

st.set_page_config(page_title="Training dynamics · DS-Lens", layout="wide")
st.title("Training dynamics")
st.markdown(
    "Each run of the **DS lab** (`python -m ds_core train lab`: every condition from one base, 3 seeds) "
    "logs, every few steps, held-out p_s, p_d|C and p_d|W (48 problems of 3x3/3x4 and 40 of 3x5..3x9, "
    "the same at every step) and the gradient that step applied, split into sampling, decision and "
    "other tokens by the app's attribution engine: the paper's Figure 1 on real training runs. SFT "
    "stages count optimiser steps on batches of 32 traces, RL stages GRPO steps (12 prompts × 8 "
    "rollouts): their step axes are drawn apart."
)


@st.cache_data(show_spinner=False, ttl=60)
def logs(root: str):
    return read_logs(root)


dyn = None
with user_errors("Cannot read the lab's training logs"):
    dyn = logs(str(LAB_DIR))
if dyn is not None and dyn.runs.empty:
    st.info(
        f"No lab runs under {LAB_DIR}. Train them with `python -m ds_core train lab` "
        "(70 minutes on this project's 2-core machine, measured)."
    )
elif dyn is not None:
    for s in dyn.skipped:
        st.warning(f"Skipped a run whose log cannot be read: {s}")
    c1, c2, c3 = st.columns([2, 2, 1])
    family = c1.radio("Metrics", ["Held-out calibration", "Gradient split"], horizontal=True, key="dyn_family")
    keys = HELDOUT if family == "Held-out calibration" else SPLIT
    metric = c2.selectbox("Metric", keys, format_func=lambda k: METRICS[k], key="dyn_metric")
    per_seed = c3.toggle("Each seed", value=False, key="dyn_seeds", help="Off: the seeds' mean with a min-max band")
    for algorithm, name, default in (
        ("sft", "SFT stages", ("sft", "sft_reflection", "reflection_balanced", "reflection_dft")),
        ("grpo", "RL stages (GRPO)", ("rl", "rl_no_kl", "rl_strong_kl", "rl_sampling_only", "rl_from_sft")),
    ):
        have = conditions_of(dyn, algorithm)
        if not have:
            continue
        st.subheader(name)
        chosen = st.multiselect(
            "Conditions", have, default=[c for c in default if c in have], key=f"dyn_conds_{algorithm}"
        )
        if not chosen:
            st.caption("Choose at least one condition.")
            continue
        sub = dyn.bands[(dyn.bands.metric == metric) & dyn.bands.condition.isin(chosen)]
        if sub.empty:
            st.caption(f"No logged {METRICS[metric]} for these conditions.")
            continue
        fig = dynamics_figure(
            dyn.bands, dyn.runs, metric, chosen, per_seed=per_seed, title=f"{METRICS[metric]} · {name}"
        )
        chart(fig, f"dynamics {algorithm} {metric}", key=f"dyn_chart_{algorithm}")
        view = sub.rename(columns={"mean": "mean over seeds", "min": "lowest seed", "max": "highest seed"})
        table(view.drop(columns=["metric"]), f"dynamics {algorithm} {metric}", key=f"dyn_table_{algorithm}")
