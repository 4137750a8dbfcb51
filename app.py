"""DS-Lens — the Streamlit entry point (`make app`): page navigation. Home is pages/0_Home.py, the
analysis pages are in pages/. Pages only draw: everything they show comes from ds_core."""

import streamlit as st

st.set_page_config(page_title="DS-Lens", layout="wide")

PAGES = [
    st.Page("pages/0_Home.py", title="Home", url_path="home", default=True),
    st.Page("pages/1_Episode_explorer.py", title="Episode explorer", url_path="Episode_explorer"),
    st.Page("pages/2_Compare_checkpoints.py", title="Compare checkpoints", url_path="Compare_checkpoints"),
    st.Page("pages/3_Custom_prompts.py", title="Custom prompts", url_path="Custom_prompts"),
    st.Page("pages/4_Calibration.py", title="Calibration", url_path="Calibration"),
    st.Page("pages/5_Gradient_balance.py", title="Gradient balance", url_path="Gradient_balance"),
    st.Page("pages/6_Hypothesis.py", title="Hypothesis", url_path="Hypothesis"),
    st.Page("pages/7_Training_dynamics.py", title="Training dynamics", url_path="Training_dynamics"),
]
st.navigation(PAGES).run()
