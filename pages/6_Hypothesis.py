"""Hypothesis: one row per claim of the paper, with the measurement DS-Lens makes, the numbers on the
shipped checkpoints and a verdict computed from them by the rule the row states
(ds_core.analysis.hypothesis). Pages only draw."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from ds_core.analysis.hypothesis import CANNOT_TELL, CONTRADICTED, SUPPORTED, claims_frame, shipped_claims
from ds_core.analysis.lab_report import collect, verdicts
from ds_core.training import lab_index
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


@st.cache_data(show_spinner=False, ttl=60)
def lab_verdicts(root: str):
    res = collect(Path(root), verify="none")
    return verdicts(res) if res.runs else []


def claim_card(c, evidence=None) -> None:
    """One claim (a hypothesis Claim or a lab Verdict): verdict badge, measurement, numbers, rule."""
    with st.container(border=True):
        st.markdown(f"**{c.claim}** — {BADGE[c.verdict]}")
        st.markdown(f"*Measured:* {c.measurement}")
        st.markdown(f"*Numbers:* {c.numbers}")
        st.caption(f"Rule: {c.rule}.")
        if evidence:
            st.markdown(f"[The evidence: {evidence[0]} →](/{evidence[1]})")


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
        claim_card(c, PAGES.get(c.page) and (c.page, PAGES[c.page]))
    table(claims_frame(claims), "hypothesis verdicts", key="hyp_dl")

st.subheader("The same predictions in the DS lab (every condition, 3 seeds)")
st.markdown(
    "The lab (`python -m ds_core train lab`) trains each condition from one base with three seeds, "
    "ablations included; these verdicts compare the seeds' committed test-set numbers by the rule each "
    "row states (ds_core.analysis.lab_report, the same table `python -m ds_core report --lab` writes "
    "into RESULTS.md). [Their training curves →](/Training_dynamics) · [their calibration →](/Calibration)"
)
lab_rows = None
with user_errors("Cannot read the lab's evaluations"):
    lab_rows = lab_verdicts(str(lab_index.LAB_DIR))
if lab_rows is not None and not lab_rows:
    st.info("No lab runs yet: `python -m ds_core train lab` trains them.")
elif lab_rows:
    for v in lab_rows:
        claim_card(v)
