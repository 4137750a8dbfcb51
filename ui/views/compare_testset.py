"""Compare, section 4: verdicts over a whole test set (ds_core.analysis.verdicts): one checkpoint's
evaluation episodes teacher-forced through every compared model, p(STOP | wrong attempt),
p(RESAMPLE | correct attempt) and where the verdicts differ from the written ones, with intervals;
kept in the results store."""

from __future__ import annotations

import streamlit as st

from ds_core.analysis.verdicts import compare_verdicts, disagreement, verdict_summary
from ds_core.episodes.tasks import parse_sizes
from ds_core.models.sampling import SamplingConfig
from ui.charts.verdicts import verdict_figure
from ui.common import chart, get_checkpoint, results_store, table, user_errors

RESULTS = "cmp_testset_results"  # session state: request -> rows


def render(labels: list[str], path_of: dict, cfg_t: tuple, seed: int) -> None:
    st.header("Over a test set: every model's verdicts on one model's episodes")
    st.caption(
        "The chosen checkpoint's evaluation run of each size (the fixed test set, this page's sampling "
        "settings; sampled and stored once) is teacher-forced through every compared model. At every "
        "decision point a model's verdict probability is q = p(STOP)/(p(STOP) + p(RESAMPLE)): "
        "**p(STOP | wrong attempt)** averages q after wrong attempts (keeping a wrong answer), "
        "**p(RESAMPLE | correct attempt)** averages 1 − q after correct ones (throwing a right answer "
        "away). Intervals: 95% bootstrap over episodes; disagreement: how often a model's verdict "
        "(STOP when q ≥ ½) differs from the one written, Wilson 95%."
    )
    c1, c2, c3 = st.columns([2, 2, 1])
    source = c1.selectbox("Episodes sampled by", labels, index=len(labels) - 1, key="cmp_ts_source")
    sizes_text = c2.text_input("Sizes", "3x3-3x5", key="cmp_ts_sizes", help="like 3x3-3x9 or 3x3, 3x6")
    n = int(c3.number_input("Problems per size", 1, 100, 20, 1, key="cmp_ts_n"))
    with user_errors("Cannot compare over the test set"):
        sizes = tuple(s.name for s in parse_sizes(sizes_text))
        request = (source, sizes, n, seed, cfg_t, tuple((x, path_of[x]) for x in labels))
        kept = st.session_state.setdefault(RESULTS, {})
        if request not in kept:
            if not st.button("Compute (kept in the results store)", key="cmp_ts_go"):
                return
            bar = st.progress(0.0, text="Sampling…")
            models = {x: get_checkpoint(path_of[x]) for x in labels}
            kept[request] = compare_verdicts(
                source,
                models,
                sizes,
                n=n,
                seed=seed,
                cfg=SamplingConfig(*cfg_t),
                store=results_store(),
                progress=lambda f, text: bar.progress(min(max(f, 0.0), 1.0), text=text),
            )
            bar.empty()
        rows = kept[request]
        summary = verdict_summary(rows)
        chart(verdict_figure(summary, source), "verdicts over the test set", key="cmp_ts_chart")
        table(summary, "verdicts over the test set", key="cmp_ts_dl_summary")
        st.markdown("**Where the verdicts differ from the ones written** (by the attempt's outcome)")
        table(disagreement(rows), "verdict disagreement", key="cmp_ts_dl_dis")
        with st.expander("Every decision point (table)"):
            table(rows, "verdicts per decision point", key="cmp_ts_dl_rows")
