"""Hypothesis: one row per claim of the paper, with the measurement DS-Lens makes, the numbers on the
shipped checkpoints and a verdict computed from them by the rule the row states
(ds_core.analysis.hypothesis). Pages only draw."""

from __future__ import annotations

import streamlit as st

from ds_core.analysis.hypothesis import CANNOT_TELL, CONTRADICTED, SUPPORTED, claims_frame, shipped_claims
from ui.common import table, user_errors

PAGES = {  # the url paths app.py gives the pages
    "Gradient balance": "Gradient_balance",
    "Calibration": "Calibration",
    "Episode explorer": "Episode_explorer",
}
BADGE = {SUPPORTED: ":green[supported]", CONTRADICTED: ":red[contradicted]", CANNOT_TELL: ":orange[cannot tell]"}


@st.cache_data(show_spinner=False)
def rows():
    return shipped_claims()


st.set_page_config(page_title="Hypothesis · DS-Lens", layout="wide")
st.title("Hypothesis")
st.markdown(
    "The paper's claims next to what DS-Lens measures on the **shipped checkpoints**. Every verdict is "
    "computed from the numbers shown by the rule beside it (ds_core.analysis.hypothesis): *supported*, "
    "*contradicted*, or *cannot tell* (the data cannot decide)."
)
claims = None
with user_errors("Cannot read the shipped evidence"):
    with st.spinner("Reading eval.json files, the balance precompute and the toy…"):
        claims = rows()
if claims:
    for c in claims:
        with st.container(border=True):
            st.markdown(f"**{c.claim}** — {BADGE[c.verdict]}")
            st.markdown(f"*Measured:* {c.measurement}")
            st.markdown(f"*Numbers:* {c.numbers}")
            st.caption(f"Rule: {c.rule}.")
            if c.page in PAGES:
                st.markdown(f"[The evidence: {c.page} →](/{PAGES[c.page]})")
    table(claims_frame(claims), "hypothesis verdicts", key="hyp_dl")
