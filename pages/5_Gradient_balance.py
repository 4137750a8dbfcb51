"""Gradient balance: the paper's Figure-1 toy, the length sweep, and dataset-level distributions of
the sampling:decision gradient ratio per objective. A router: each view is a module of ui/views/,
everything it shows is computed in ds_core.analysis (the toy, ds_core.analysis.balance)."""

from __future__ import annotations

from dataclasses import asdict

import streamlit as st

from ds_core.analysis.toy import ToyConfig
from ui.views import balance_dataset, balance_group, balance_sweep, balance_toy
from ui.views.balance_common import DEMOS

st.set_page_config(page_title="Gradient balance · DS-Lens", layout="wide")

st.title("Gradient balance")
st.markdown(
    "How an objective's gradient is shared between **sampling** tokens (the attempts) and "
    "**decision** tokens (`[STOP]`/`[RESAMPLE]`). The paper's Gradient Attribution Property: the "
    "GRPO **surrogate** weights every token of an episode by the same advantage A (Theorem 3.1, "
    "*balanced*: a claim about the sum over a group, which the view 'GRPO group' measures; on one "
    "episode the surrogate's split is SFT's); "
    "the **KL** penalty and **SFT** sum a per-token term over every token, so an attempt of L "
    "tokens gets about L times the decision's weight (Theorem 3.2, *unbalanced*). The ratio shown "
    "throughout is |G_S| / |G_D|: the norm of the sampling tokens' summed gradient over the "
    "decision tokens'."
)

VIEWS = ("Toy (Figure 1)", "Length sweep", "Dataset distributions", "GRPO group")
TOY_CFG, TOY_DEMO = "balance_toy_cfg", "balance_toy_demo"  # the toy settings, kept across views
view_name = st.radio("view", VIEWS, horizontal=True, key="balance_view", label_visibility="collapsed")
defaults = asdict(ToyConfig())
saved = {**defaults, **st.session_state.get(TOY_CFG, {})}
values = dict(saved)
demo_name = st.session_state.get(TOY_DEMO, list(DEMOS)[0])

if view_name == VIEWS[0]:
    demo_name = balance_toy.settings(defaults, saved, values, demo_name)
    st.session_state[TOY_CFG], st.session_state[TOY_DEMO] = dict(values), demo_name
demo = tuple(DEMOS[demo_name])
cfg_items = tuple(sorted(values.items()))

if view_name == VIEWS[0]:
    balance_toy.render(values, cfg_items, demo)
elif view_name == VIEWS[1]:
    balance_sweep.render(values, defaults, cfg_items, demo)
elif view_name == VIEWS[2]:
    balance_dataset.render()
else:
    balance_group.render()
