"""Gradient balance, view 3: ratio distributions over sampled episodes
(ds_core.analysis.balance.dataset), shipped or computed."""

from __future__ import annotations

import pandas as pd
import streamlit as st

import ds_core.analysis.balance.dataset as BD
from ds_core.analysis.balance.results import normalize_sizes
from ds_core.models.checkpoint import content_hash
from ds_core.objectives import DEFAULT_OBJECTIVES
from ui.charts import balance as C
from ui.common import (
    chart,
    get_checkpoint,
    max_tokens_input,
    pick_checkpoint,
    results_store,
    sampling_inputs,
    table,
    text_format_inputs,
)
from ui.services.episodes import with_prompt_settings
from ui.views.balance_common import (
    dataset_figure,
    errors,
    fmt,
    load_shipped_or_none,
    objective_label,
    sampling_of,
    shipped_caption,
    stored_dataset,
    stored_or_compute,
)


def render() -> None:
    st.markdown(
        "Sampled episodes of the fixed test sets (shipped: temperature 1, up to 4 attempts; computed: the "
        "sampling and prompt settings you pick) attributed under "
        "each objective (`attribute_dataset`): one ratio per episode and objective, stratified by "
        "the **outcome** of the first attempt (correct_kept: correct then STOP; wrong_revised: "
        "wrong then RESAMPLE; wrong_kept; correct_changed). Surrogate advantage +1 for a correct "
        "episode, −1 for a wrong one (the ratio does not depend on it); KL against the checkpoint's "
        "parent (the base checkpoint has none, so no KL rows)."
    )
    src = st.radio("source", ["shipped precompute", "compute / results store"], horizontal=True, key="data_source")
    frame, summary = None, None
    if src == "shipped precompute":
        sh = load_shipped_or_none()
        if sh is not None and len(sh.dataset):
            shipped_caption(sh, "dataset")
            frame, summary = sh.dataset, sh.dataset_summary
    else:
        with errors("Dataset attribution"):
            path = pick_checkpoint("checkpoint", key="data_ck", default="rl")
            fc = st.columns(3)
            sizes = fc[0].text_input("sizes", "3x3,3x4", key="data_sizes", help="comma-separated, ranges like 3x3-3x9")
            n = int(fc[1].number_input("episodes per size", 1, 100, 10, key="data_n"))
            objs = tuple(
                fc[2].multiselect(
                    "objectives",
                    list(DEFAULT_OBJECTIVES),
                    default=list(DEFAULT_OBJECTIVES),
                    key="data_objectives",
                    format_func=objective_label,
                )
            )
            sc = st.columns(5)
            temperature, top_p, attempts, seed = sampling_inputs("data", sc[:4])
            cfg = (temperature, top_p, attempts, max_tokens_input("data", sc[4]))
            fmt_settings = text_format_inputs("data")
            sampling_of(cfg)  # validates the settings
            if path and objs:
                res = stored_or_compute(
                    lambda: stored_dataset(path, content_hash(path), sizes, n, objs, seed, cfg, fmt_settings),
                    lambda cb, engine: BD.dataset_balance(
                        with_prompt_settings([get_checkpoint(path)], fmt_settings)[0],
                        sizes,
                        n,
                        objs,
                        store=results_store(),
                        seed=seed,
                        cfg=sampling_of(cfg),
                        progress=cb,
                        engine=engine,
                    ),
                    stored_dataset,
                    "data_compute",
                    "sampling episodes",
                    (
                        "dataset attribution",
                        content_hash(path),
                        len(normalize_sizes(sizes)) * n * len(objs),
                        "attribution",
                    ),
                )
                if res is not None:
                    frame, summary = res.frame, res.summary
            elif not objs:
                st.info("Pick at least one objective.")
    if frame is not None and len(frame):
        cks = list(dict.fromkeys(frame["checkpoint"]))
        sizes_present = list(dict.fromkeys(frame["size"]))
        objs = list(dict.fromkeys(frame["objective"]))
        fc = st.columns(3)
        pick_ck = fc[0].multiselect("checkpoints", cks, default=cks, key="data_ckpts")
        pick_size = fc[1].multiselect("sizes", sizes_present, default=sizes_present, key="data_size_filter")
        pick_obj = fc[2].multiselect("objectives", objs, default=objs, key="data_objs", format_func=objective_label)
        gc = st.columns(4)
        metric = gc[0].selectbox(
            "quantity",
            ["log10_ratio_SD", "log10_ratio_SD_per_token", "share_D", "cos_SD"],
            key="data_metric",
            format_func=lambda m: C.METRIC_LABELS.get(m, m),
        )
        kind = gc[1].selectbox("plot", ["box", "violin", "strip"], key="data_kind")
        facet = gc[2].selectbox("facet by", ["checkpoint", "size", "outcome", "none"], key="data_facet")
        colour = gc[3].selectbox("colour by", ["outcome", "size", "checkpoint", "objective", "none"], key="data_colour")
        sel = frame[
            frame["checkpoint"].isin(pick_ck) & frame["size"].isin(pick_size) & frame["objective"].isin(pick_obj)
        ]
        if not len(sel):
            st.info("No episodes for this selection.")
        else:
            chart(dataset_figure(sel, metric, kind, facet, colour), "dataset ratio distribution", key="chart_dataset")
            med = sel.groupby(["checkpoint", "objective"], sort=False)["ratio_SD"].median().unstack("objective")
            st.caption(
                f"{len(sel)} (episode, objective) rows from {sel.groupby('checkpoint')['episode'].nunique().sum()} "
                "episode indices. Median ratio per checkpoint: "
                + "; ".join(
                    f"**{ck}** " + ", ".join(f"{objective_label(o)} {fmt(v)}" for o, v in row.items() if pd.notna(v))
                    for ck, row in med.iterrows()
                )
                + "."
            )
            st.markdown(
                "**Summary** (median, quartiles, mean of the ratio and the decision share per "
                "objective × size × outcome; 'all' pools sizes or outcomes)"
            )
            sm = summary[
                summary["checkpoint"].isin(pick_ck)
                & summary["objective"].isin(pick_obj)
                & summary["size"].isin(pick_size + ["all"])
            ]
            table(sm, "dataset balance summary", key="dl_data_summary")
            with st.expander("Per-episode table"):
                table(sel, "dataset balance episodes", key="dl_data_episodes")
